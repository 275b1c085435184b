"""Batching consumed records by count and by time, in arrival order.

Why: one PostgreSQL transaction and one round of acknowledgements per batch is
what makes the consumer fast; a time window bounds the latency when traffic is
light. The window opens when the batch's *first* record was produced (its Kafka
timestamp, clamped to ``max_ms`` in the past), so an idle consumer answers
the first new record within ``max_ms`` (the Rust reference consumer slept
in one-second steps and waited up to five seconds: docs/architecture.md,
"What the Rust reference services got wrong", 10).

Records are kept in arrival order and a batch is always a *prefix* of what was
received (the Rust reference popped the newest first, ibid., 3). Because Kafka
returns each partition's records in offset order, a prefix per partition is
a prefix of each partition's log, and committing "last offset + 1" per
partition of a processed batch never skips a record.

Pure logic: the clock is injected, nothing here talks to Kafka.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from dicomflow.kafka.records import TP, Record


def next_offsets(records: Iterable[Record]) -> dict[TP, int]:
    """Per partition, the offset to commit once ``records`` are done: highest offset + 1."""
    out: dict[TP, int] = {}
    for r in records:
        nxt = r.offset + 1
        if nxt > out.get(r.tp, -1):
            out[r.tp] = nxt
    return out


@dataclass
class Batch:
    """Records taken together for one transaction, in arrival order."""

    records: list[Record]
    #: Monotonic time the first record arrived (the start of the batch window).
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.records)

    def offsets(self) -> dict[TP, int]:
        """The offsets to commit when this batch is persisted and published."""
        return next_offsets(self.records)

    def partitions(self) -> set[TP]:
        """The partitions this batch holds records of."""
        return {r.tp for r in self.records}

    def drop_partitions(self, partitions: Collection[TP]) -> int:
        """Forget the records of revoked partitions; returns how many were dropped."""
        before = len(self.records)
        self.records = [r for r in self.records if r.tp not in partitions]
        return before - len(self.records)


class Batcher:
    """Accumulates records until ``max_messages`` are there or ``max_ms`` have passed.

    Records beyond a full batch stay for the next one, in order (a paused
    partition can still hand over a fetch that arrived before the pause).
    """

    def __init__(self, max_messages: int, max_ms: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_messages < 1 or max_ms < 1:
            raise ValueError("a batch needs at least one message and one millisecond")
        self.max_messages = max_messages
        self.max_s = max_ms / 1000.0
        self._clock = clock
        self._records: list[Record] = []
        self._started: float | None = None

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[Record], age_s: float = 0.0) -> None:
        """Append records in the order the client returned them; opens the window if empty.

        ``age_s`` is how long the first record has existed already (from its
        Kafka timestamp): the window opens that much earlier, clamped to
        ``[0, max_ms]`` so that a skewed producer clock can at worst close the
        window at once, never keep it open longer.
        """
        for r in records:
            if self._started is None:
                self._started = self._clock() - min(max(age_s, 0.0), self.max_s)
            self._records.append(r)

    def room(self) -> int:
        """How many more records fit into the current batch (at least 0)."""
        return max(0, self.max_messages - len(self._records))

    def time_left(self) -> float | None:
        """Seconds until the window closes; None while empty (nothing to wait for)."""
        if self._started is None:
            return None
        return max(0.0, self._started + self.max_s - self._clock())

    def ready(self) -> bool:
        """True when the batch is full or its window has closed."""
        if not self._records:
            return False
        left = self.time_left()
        return len(self._records) >= self.max_messages or (left is not None and left <= 0.0)

    def take(self) -> Batch:
        """Remove and return the oldest ``max_messages`` records as a batch; the rest stay."""
        taken, rest = self._records[: self.max_messages], self._records[self.max_messages :]
        started = self._started if self._started is not None else self._clock()
        self._records = rest
        # Left-over records keep the window they arrived in: none waits longer
        # than max_ms after its window opened.
        self._started = started if rest else None
        return Batch(taken, started)

    def drop_partitions(self, partitions: Collection[TP]) -> int:
        """Forget records of revoked partitions; returns how many were dropped."""
        before = len(self._records)
        self._records = [r for r in self._records if r.tp not in partitions]
        if not self._records:
            self._started = None
        return before - len(self._records)


__all__ = ["Batch", "Batcher", "next_offsets"]
