"""Issue 23's check: a sender that leaves Nagle on is as fast as one that turns it off.

dcmtk's ``storescu`` without ``TCP_NODELAY`` in its environment (as hospitals
run it) holds the short last segment of each PDU until the rest is
acknowledged. A receiver that delays its acknowledgements (Linux: >= 40 ms)
stalls that sender once per C-STORE: >= 49 x 40 ms = 1.96 s more for 50
instances than the same sender with ``TCP_NODELAY=1``.

The check is relative, not a wall-clock bound: the same receiver gets the
two senders alternated, so the machine's load moves both alike. Measured on
2 shared cores (50 instances, medians of 3 pairs): without prompt
acknowledgements the Nagle sender took 1.8-2.0 s (native engine) and
1.5-1.7 s (pynetdicom engine) longer; with them, -0.6 to +0.6 s.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.corpus import make_corpus
from dicomflow.settings import Settings
from tests.integration.ingest_support import read_store_events, storescu

#: Instances per association.
NAGLE_INSTANCES = 50
#: The most the Nagle sender's median may exceed the TCP_NODELAY sender's: under the smallest stall measured.
NAGLE_MARGIN_S = 0.75
#: Pairs measured first, and at most (a stall is deterministic; a noisy pair is not).
FIRST_PAIRS, MOST_PAIRS = 3, 5


def arrival_span(settings: Settings, sop_uids: set[str]) -> float:
    """Seconds from the first to the last of these instances' arrival (their store events' created_time).

    The C-STORE phase of the association alone: storescu's start (its dictionary, reading every file
    before it connects) does not count.
    """
    times = sorted(e.created_time for _, e in read_store_events(settings, settings.topics.main) if e.sop_uid in sop_uids)
    assert len(times) == len(sop_uids), f"{len(times)} of {len(sop_uids)} instances stored"
    return (times[-1] - times[0]).total_seconds()


@dataclass
class NagleRun:
    """The arrival spans of each sender, and every SOP Instance UID sent."""

    nagle: list[float] = field(default_factory=list)
    nodelay: list[float] = field(default_factory=list)
    sent: set[str] = field(default_factory=set)

    @property
    def stall_s(self) -> float:
        """How much longer the Nagle sender's median span is than the TCP_NODELAY sender's."""
        return statistics.median(self.nagle) - statistics.median(self.nodelay)

    def __str__(self) -> str:
        return (f"{NAGLE_INSTANCES} instances: Nagle on {self.nagle} s, TCP_NODELAY {self.nodelay} s, "
                f"median difference {self.stall_s:.2f} s (bound {NAGLE_MARGIN_S} s)")


def compare_senders(settings: Settings, port: int, folder: Path, *flags: str) -> NagleRun:
    """Alternate the two senders (TCP_NODELAY first) against the receiver on ``port``."""
    run = NagleRun()
    pair = 0
    while pair < MOST_PAIRS and (pair < FIRST_PAIRS or run.stall_s >= NAGLE_MARGIN_S):
        for nodelay in (True, False):
            here = folder / f"pair{pair}-{'nodelay' if nodelay else 'nagle'}"
            sops = {e.sop_uid for e in make_corpus(here, NAGLE_INSTANCES, studies=1, series_per_study=1).events}
            done = storescu(port, [here], "+sd", "+r", *flags, nodelay=nodelay)
            assert done.returncode == 0 and "E:" not in done.stderr, done.stderr
            run.sent |= sops
            (run.nodelay if nodelay else run.nagle).append(round(arrival_span(settings, sops), 3))
        pair += 1
    return run
