"""Delivery accounting: which messages of a batch Kafka acknowledged, and which not.

A batch is a list of :class:`Segment` (messages bound for one topic), each
message one slot of a :class:`Tracker`. librdkafka's delivery callbacks
report slots from whichever thread polls the producer; the callbacks only
record (they never raise: an exception there would surface inside ``poll()``
on another thread). The caller gets a :class:`BatchResult`: every message is
either delivered or one :class:`DeliveryFailure`; nothing is counted
delivered without an acks=all acknowledgement.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dicomflow.kafka.exceptions import DeliveryError

if TYPE_CHECKING:  # only types: importing this module loads no Kafka client
    from confluent_kafka import KafkaError, Message

log = logging.getLogger(__name__)

#: Headers as librdkafka's produce() is typed (values may also be str or None).
ProduceHeaders = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True)
class DeliveryFailure:
    """One message Kafka did not acknowledge."""

    index: int  # position in the batch passed in
    topic: str
    key: str | None
    reason: str


@dataclass
class BatchResult:
    """Outcome of a batch send: every message is either delivered or in ``failures``.

    ``delivered + len(failures)`` is the number of Kafka messages of the batch:
    a store event sent with its receipt is two messages (storage_queue and
    log_queue) with the same ``index``.
    """

    delivered: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def failed_indices(self) -> set[int]:
        """Positions in the input batch with at least one message not delivered."""
        return {f.index for f in self.failures}

    def raise_for_failures(self) -> None:
        """Raise PublishError naming the first failures when any message failed.

        Raises:
            DeliveryError: a :class:`~dicomflow.errors.PublishError` carrying
                every failure, when there is at least one.
        """
        if self.failures:
            raise DeliveryError(self.failures, self.delivered)


@dataclass(frozen=True)
class Segment:
    """Messages of one batch bound for one topic; slots ``start .. start+len-1``."""

    start: int
    topic: str
    keys: Sequence[str | bytes | None]
    values: Sequence[bytes]
    headers: Sequence[ProduceHeaders | None] | None = None

    def __len__(self) -> int:
        return len(self.values)


class Tracker:
    """The outcome of one batch, filled in by delivery callbacks from whichever thread polls.

    Each message has a slot; a slot is reported once (delivered or failed).
    When every slot is reported, or the caller stops waiting (:meth:`abandon`),
    the tracker is closed: the event is set, ``on_done`` runs once, and late
    reports are ignored so a result never changes after it was returned.
    """

    __slots__ = ("_closed", "_describe", "_done", "_lock", "_on_done", "_pending", "_reported",
                 "_segments", "result")

    def __init__(
        self,
        segments: list[Segment],
        describe: Callable[[KafkaError], str],
        on_done: Callable[[BatchResult], None] | None = None,
    ) -> None:
        total = sum(len(s) for s in segments)
        self._segments = segments
        self._describe = describe
        self._on_done = on_done
        self._lock = threading.Lock()
        self._pending = total
        self._reported = bytearray(total)
        self._closed = False
        self._done = threading.Event()
        self.result = BatchResult()
        if total == 0:
            self._closed = True
            self._finish()

    # -- called from librdkafka callbacks (poll thread) or the sender ---------

    def on_delivery(self, slot: int, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report for one slot. Runs inside ``poll()``: never raises."""
        try:
            self._report(slot, None if err is None else self._describe(err))
        except Exception:
            log.exception("recording the delivery report of message #%s failed", slot)

    def fail(self, slot: int, reason: str) -> None:
        """Record a message that never reached librdkafka's queue."""
        self._report(slot, reason)

    def _report(self, slot: int, reason: str | None) -> None:
        with self._lock:
            if self._closed or self._reported[slot]:
                return
            self._reported[slot] = 1
            if reason is None:
                self.result.delivered += 1
            else:
                self.result.failures.append(self._failure(slot, reason))
            self._pending -= 1
            if self._pending:
                return
            self._closed = True
        self._finish()

    def abandon(self, reason: str) -> None:
        """Stop waiting: every message not reported yet is a failure with ``reason``."""
        with self._lock:
            if self._closed:
                return
            for slot, seen in enumerate(self._reported):
                if not seen:
                    self.result.failures.append(self._failure(slot, reason))
            self._pending = 0
            self._closed = True
        self._finish()

    # -- the caller's side ---------------------------------------------------

    @property
    def done(self) -> bool:
        """Every message is reported, or the caller stopped waiting."""
        return self._done.is_set()

    def wait(self, timeout_s: float) -> bool:
        """Block until every message is reported; False when ``timeout_s`` passed first."""
        return self._done.wait(max(timeout_s, 0.0))

    def _failure(self, slot: int, reason: str) -> DeliveryFailure:
        segment = next(s for s in reversed(self._segments) if s.start <= slot)
        index = slot - segment.start
        key = segment.keys[index]
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        return DeliveryFailure(index=index, topic=segment.topic, key=key, reason=reason)

    def _finish(self) -> None:
        self.result.failures.sort(key=lambda f: (f.index, f.topic))
        self._done.set()
        if self._on_done is not None:
            try:
                self._on_done(self.result)
            except Exception:
                log.exception("delivering a batch result to its waiter failed")


__all__ = ["BatchResult", "DeliveryFailure", "ProduceHeaders", "Segment", "Tracker"]
