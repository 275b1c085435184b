"""The fuzz run: publish every case, let one consumer drain them, judge each input."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dicomflow.models import encode
from dicomflow.settings import Settings
from dicomflow_faults.checks import committed_offsets, read_dead_letters, read_rows
from dicomflow_faults.fuzz.builder import CaseBuilder
from dicomflow_faults.fuzz.cases import CASE_HEADER, Case, FuzzResult
from dicomflow_faults.fuzz.files import sample_files, usable_samples
from dicomflow_faults.fuzz.payloads import hypothesis_payloads
from dicomflow_faults.fuzz.verdict import checks, judge
from dicomflow_faults.instances import generate
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.supervisor import Component, Supervisor, component_env

log = logging.getLogger(__name__)


def run_fuzz(
    stack: PrivateStack,
    *,
    payloads: int,
    files: int,
    controls: int,
    seed: int,
    log_dir: Path,
    timeout_s: float = 300.0,
) -> FuzzResult:
    """Publish the fuzz inputs and controls, let one consumer drain them, judge every input.

    Raises:
        dicomflow.errors.PublishError: the inputs could not be published.
        dicomflow.errors.StackError: the phase's database could not be set up.
    """
    from dicomflow.kafka.producer import Publisher

    result = FuzzResult()
    phase = stack.new_phase("fuzz")
    root = phase.settings.storage.root
    builder = CaseBuilder(root, stack.phase_dir(phase), seed)

    good = generate(root, controls + 2, seed=seed, worker_node_id="faults-fuzz", min_per_series=1,
                    max_per_series=max(controls, 2))
    base, spare = good.instances[0], good.instances[1]
    for inst in good.instances[2:]:
        builder.add("control", "good instance", encode(inst.event), inst.sop_uid)
    for label, value in hypothesis_payloads(payloads, seed, base.event):
        builder.add("payload", label, value)
    builder.damaged_files(files, usable_samples(sample_files()))
    spare_uids = (spare.event.study_uid, spare.event.series_uid, spare.event.sop_uid)
    builder.specials(spare.path, spare_uids)
    # The spare's own file is used by the special cases only; its event is never published.
    cases = builder.cases
    order = list(range(len(cases)))
    builder.rng.shuffle(order)
    items = [(f"fuzz-{cases[i].id}".encode(), cases[i].value, [(CASE_HEADER, str(cases[i].id).encode())])
             for i in order]
    with Publisher(phase.settings.kafka, phase.settings.topics, client_id="faults-fuzz") as publisher:
        publisher.send_raw(phase.settings.topics.main, items).raise_for_failures()
    log.info("fuzz: %d inputs published (%d payloads, %d damaged files, %d special, %d controls)",
             len(cases), sum(c.kind == "payload" for c in cases), sum(c.kind == "file" for c in cases),
             sum(c.kind == "special" for c in cases), sum(c.kind == "control" for c in cases))

    supervisor = Supervisor(restart_crashed=True)
    consumer = supervisor.add(Component(
        "fuzz-consumer", ["consume", "--until-idle", "5"], component_env(phase.env()), log_dir, cwd=log_dir,
        finite=True))
    started = time.monotonic()
    consumer.start()
    supervisor.start_watching()
    try:
        result.exit_code = _wait_exit(consumer, phase.settings, timeout_s)
        result.went_idle = result.exit_code == 0
    finally:
        supervisor.stop_watching()
        if consumer.alive():
            result.exit_code = consumer.terminate()
    result.seconds = time.monotonic() - started
    result.crashes = len(supervisor.crashes())

    dead = read_dead_letters(phase.settings.kafka, phase.settings.topics.dlq)
    rows = read_rows(phase.settings.database).sop_uids
    _locate(cases, phase.settings)
    committed = committed_offsets(phase.settings.kafka, phase.settings.topics) or {}
    result.cases = cases
    result.dead_letters_without_reason = judge(cases, dead, rows, committed)
    result.stuck_at = {p: o for p, o in committed.items()
                       if any(c.position is not None and c.position[0] == p and c.position[1] >= o for c in cases)}
    result.checks = checks(result)
    return result


def _wait_exit(consumer: Component, settings: Settings, timeout_s: float, stall_s: float = 60.0) -> int | None:
    """Wait for the consumer to exit when idle; give up after ``timeout_s``, or ``stall_s`` without progress.

    Progress is the group's committed offsets moving: a consumer that
    retries one input forever (a poison message taken for a transient
    fault) never goes idle, and waiting longer tells nothing new.
    """
    deadline = time.monotonic() + timeout_s
    last: dict[int, int] | None = None
    moved_at = time.monotonic()
    while time.monotonic() < deadline:
        code = consumer.wait(2.0)
        if code is not None:
            return code
        now = committed_offsets(settings.kafka, settings.topics)
        if now != last:
            last, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > stall_s:
            log.error("fuzz: the consumer committed nothing for %.0f s (offsets %s); giving up on it", stall_s, now)
            return None
    return None


def _locate(cases: list[Case], settings: Settings) -> None:
    """Find each input's partition and offset on the main topic (by its case header)."""
    from dicomflow.kafka.reader import read_all

    by_id = {c.id: c for c in cases}
    for record in read_all(settings.kafka, settings.topics.main, timeout_s=60.0):
        raw = dict(record.headers).get(CASE_HEADER)
        if raw is not None and raw.isdigit() and int(raw) in by_id:
            by_id[int(raw)].position = (record.partition, record.offset)


__all__ = ["run_fuzz"]
