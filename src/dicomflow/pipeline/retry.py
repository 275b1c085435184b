"""The retry policy of a failed batch: pause every owned partition, back off, keep polling.

A transient fault (PostgreSQL down, Kafka not acknowledging, a refused
commit, storage unreadable) retries the *same* batch with capped exponential
backoff (:func:`~dicomflow.pipeline.batch.backoff_delay`). While it waits,
every partition the member owns is paused, and the loop keeps polling
(paused partitions return nothing) so the member stays in its group and
serves rebalances; a partition assigned meanwhile is paused too. Nothing past
the batch is committed; consumption resumes once the batch went through.
Nothing sleeps in fixed steps: the wait is the poll calls themselves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable

from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.records import TP, Record
from dicomflow.pipeline.batch import backoff_delay

log = logging.getLogger(__name__)


class PausedRetry:
    """Which partitions are paused for a batch in retries, and the wait before the next attempt."""

    def __init__(self, initial_ms: int, max_ms: int, stop: threading.Event) -> None:
        self._initial_ms = initial_ms
        self._max_ms = max_ms
        self._stop = stop
        #: Partitions paused by this policy (resumed together).
        self.paused: set[TP] = set()
        #: True from the first failed attempt until the batch went through (or was given up).
        self.retrying = False

    def hold_new(self, consumer: KafkaConsumer, records: Iterable[Record]) -> None:
        """While retrying, pause the partitions of records that arrive from a fresh assignment too."""
        if not self.retrying:
            return
        fresh = {r.tp for r in records} - self.paused
        if fresh:  # newly assigned while a batch is stuck: hold them too
            consumer.pause(fresh)
            self.paused |= fresh

    def forget(self, partitions: Collection[TP]) -> None:
        """Revoked partitions are no longer ours to resume."""
        self.paused -= set(partitions)

    def wait(self, exc: Exception, attempt: int, consumer: KafkaConsumer, poll: Callable[[float], object],
             poll_max_s: float) -> bool:
        """Pause everything owned, back off while calling ``poll(timeout)``; False when the loop must stop."""
        delay = backoff_delay(attempt, self._initial_ms, self._max_ms)
        log.warning("batch attempt %s failed (%s: %s); retrying in %.1f s, consumption paused",
                    attempt, type(exc).__name__, exc, delay)
        if not self.retrying:
            self.retrying = True
            owned = consumer.assignment()
            consumer.pause(owned)
            self.paused |= owned
        deadline = time.monotonic() + delay
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            # Keeps the member alive and serves rebalances; paused partitions return nothing.
            poll(min(left, poll_max_s))
        return False

    def resume(self, consumer: KafkaConsumer) -> None:
        """The batch is done (or given up): resume what was paused."""
        if self.paused:
            consumer.resume(self.paused)
            log.info("consumption resumed")
        self.paused = set()
        self.retrying = False


__all__ = ["PausedRetry"]
