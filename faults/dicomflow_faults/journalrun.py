"""The journal run: the C-STORE load of :mod:`.scenario` with ``receiver.ack = "journal"``, the receiver SIGKILLed.

With the journal, the receiver answers Success once the file and a record
of its store event in its local journal are durable, *before* Kafka
acknowledged the event (docs/receiver.md). What this run proves is the
promise that comes with it: every instance the sender was told Success
for reaches Kafka (and so PostgreSQL), whenever the receiver is killed —
between the journal's sync and the answer, with events durable but not yet
published, in the middle of a group commit. The kill schedule of the fault
run draws the moments; the restarted receiver must find the dead one's
journal segments and publish them.

Beyond the fault run's own checks (every acknowledged instance indexed
once, nothing good in the DLQ, every kill survived), this run checks the
journal itself: empty once the receiver stopped cleanly (everything
acknowledged by Kafka and removed), and how many events the restarts
published again (a figure; a kill may land when nothing was pending).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dicomflow.ingest.journal import JOURNAL
from dicomflow.ingest.journal_segment import segment_paths
from dicomflow_faults.checks import Check
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.scenario import FaultRun, FaultRunResult

log = logging.getLogger(__name__)

_REPLAYED = re.compile(r"journal: (\d+) store event\(s\) of \S+ \(a receiver that did not stop cleanly\)")


def run_journal_faults(stack: PrivateStack, instances: int, *, seed: int, log_dir: Path, kills: int = 5,
                       associations: int = 4, down_range: tuple[float, float] = (0.2, 1.5)) -> FaultRunResult:
    """The fault run with the journal, receiver kills only; the journal's checks added to its result.

    Raises:
        StackError: a component or service could not be started at all.
    """
    own_logs = log_dir / "journal"
    own_logs.mkdir(parents=True, exist_ok=True)
    run = FaultRun(stack, instances, seed=seed, log_dir=own_logs, per_kind=kills, kinds=("receiver",),
                   associations=associations, down_range=down_range, name="journal", ack="journal")
    result = run.run()
    result.checks.extend(_journal_checks(run))
    return result


def _journal_checks(run: FaultRun) -> list[Check]:
    folder = Path(run.phase.settings.storage.root) / JOURNAL
    left = segment_paths(folder)
    replayed = _replayed(run.receiver.log_path)
    kills = [f for f in run.result.faults if f.injected_s is not None]
    return [
        Check("journal: nothing left in the journal after the receiver stopped", not left,
              f"{len(left)} segment(s) in {folder}" + (f", e.g. {left[0].name}" if left else "")
              + f"; {replayed} store event(s) published again by the restarts after {len(kills)} SIGKILL(s)"),
        Check("journal: the receiver kept its journal (it ran with receiver.ack = journal)", folder.is_dir(),
              f"{folder} {'exists' if folder.is_dir() else 'was never made'}"),
    ]


def _replayed(log_path: Path) -> int:
    """Store events the restarted receivers found in a dead one's journal (from the receiver's log)."""
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(int(m.group(1)) for m in _REPLAYED.finditer(text))


__all__ = ["run_journal_faults"]
