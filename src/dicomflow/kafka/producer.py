"""The publisher: one idempotent producer per process, built from the settings.

Every dicomflow message type goes to its topic with its key (DESIGN.md,
"Topics"). Unlike the reference ``KafkaMessagePublisher``:

* one producer lives as long as the :class:`Publisher` (the reference built one
  per batch), and nothing flushes it after each message (the reference did,
  which capped it at one broker round trip per message);
* a batch is sent as it is given: nothing is collected into a map by key, so
  two messages with the same key are two messages (the reference's HashMap
  silently kept only the last one);
* every message's outcome is reported: a batch call returns a
  :class:`BatchResult` with the delivered count and one
  :class:`DeliveryFailure` (index, topic, key, reason) per message Kafka did
  not acknowledge. Nothing is counted delivered without an acks=all
  acknowledgement.

Threads: a background thread polls the producer, which runs librdkafka's
delivery callbacks. The callbacks only record outcomes (they never raise: an
exception there would surface inside ``poll()`` on another thread); the
outcome reaches the caller on the caller's thread, or resolves an asyncio
future through ``loop.call_soon_threadsafe``. One publisher is safe to share
between threads (the receiver's association threads) and event loops.

Backpressure: when librdkafka's local queue is full (``BufferError``) the
sender waits for deliveries to make room and tries again; it never drops a
message and never crashes. If the broker is unreachable, librdkafka reports
each queued message failed once ``message.timeout.ms`` has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from dicomflow.errors import ConfigError, PublishError
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.config import producer_config, redacted
from dicomflow.kafka.exceptions import DeliveryError, PublisherClosedError
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, encode_many
from dicomflow.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

#: Kafka record headers as librdkafka takes them.
Headers = list[tuple[str, bytes]]
#: (key, value, headers) of one raw message (dead-letter topic).
RawMessage = tuple[bytes | None, bytes, Headers | None]
#: Headers as librdkafka's produce() is typed (values may also be str or None).
_ProduceHeaders = list[tuple[str, str | bytes | None]]

#: Messages produced between two yields to the event loop in the async API.
_ASYNC_CHUNK = 1000
#: Seconds a sender sleeps (async) or polls (blocking) when the local queue is full.
_FULL_QUEUE_WAIT_S = 0.01
#: Seconds added to message.timeout.ms before a blocking send stops waiting by itself.
_GRACE_S = 5.0
#: Seconds a blocking sender serves its own acknowledgements before sleeping on them.
_EAGER_WAIT_S = 0.01
#: Longest the poll thread blocks in one call (it notices new waiters at this pace).
_IDLE_POLL_S = 0.01
#: Seconds between two warnings with the same librdkafka error code.
_ERROR_REPEAT_S = 30.0


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
class _Segment:
    """Messages of one batch bound for one topic; slots ``start .. start+len-1``."""

    start: int
    topic: str
    keys: Sequence[str | bytes | None]
    values: Sequence[bytes]
    headers: Sequence[_ProduceHeaders | None] | None = None

    def __len__(self) -> int:
        return len(self.values)


class _Tracker:
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
        segments: list[_Segment],
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
        except Exception:  # noqa: BLE001 - an exception here would escape from poll() elsewhere
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
            except Exception:  # noqa: BLE001 - may run inside poll(); the caller still gets the result
                log.exception("delivering a batch result to its waiter failed")


def _series_keys(events: Sequence[DicomStoreMeta]) -> list[str]:
    """Each event's storage_queue key, hashing each series once per batch.

    A batch holds many instances of few series; the md5 is the costliest
    step of building a batch, so it is computed once per series.
    """
    cache: dict[tuple[str, str, str, str], str] = {}
    keys = []
    for e in events:
        series = (e.tenant_id, e.patient_id, e.study_uid, e.series_uid)
        key = cache.get(series)
        if key is None:
            key = cache[series] = e.key()
        keys.append(key)
    return keys


def _resolver(loop: asyncio.AbstractEventLoop, future: asyncio.Future[BatchResult]) -> Callable[[BatchResult], None]:
    """A thread-safe ``on_done`` that resolves ``future`` on its own event loop."""

    def set_result(result: BatchResult) -> None:
        if not future.done():
            future.set_result(result)

    def on_done(result: BatchResult) -> None:
        try:
            loop.call_soon_threadsafe(set_result, result)
        except RuntimeError:  # the loop is closed: nobody awaits this batch any more
            log.debug("event loop closed before a batch result arrived")

    return on_done


class Publisher:
    """Sends every dicomflow message type to its topic with its key (DESIGN.md).

    Build one per process and share it; :meth:`close` it at shutdown (or use
    it as a context manager) so queued messages are flushed.

    Raises:
        ConfigError: (from the constructor) librdkafka rejects a property, or
            ``kafka.client`` tries to turn off acks=all or idempotence.
    """

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, *, client_id: str = "dicomflow-producer") -> None:
        self._kafka = kafka
        self._topics = topics
        self._config = producer_config(kafka, client_id=client_id)
        self._wait_default_s = kafka.message_timeout_ms / 1000 + _GRACE_S
        self._error_last: dict[int, float] = {}
        self._fatal: KafkaError | None = None
        try:
            self._producer = Producer({**self._config, "error_cb": self._on_error, "logger": librdkafka_log})
        except KafkaException as exc:
            raise ConfigError("kafka", "settings", f"the Kafka client rejected its configuration: {exc}") from exc
        self._closed = False
        self._close_lock = threading.Lock()
        self._stop = threading.Event()
        self._waiters = 0
        self._waiters_lock = threading.Lock()
        self._poller = threading.Thread(target=self._poll_loop, name="dicomflow-kafka-poll", daemon=True)
        self._poller.start()
        log.info("Kafka publisher for %s: compression %s, linger %s ms, message timeout %s ms",
                 kafka.brokers, kafka.compression_codec, kafka.linger_ms, kafka.message_timeout_ms)
        log.debug("producer configuration: %s", redacted(self._config))

    # ------------------------------------------------------------ introspection

    @property
    def config(self) -> dict[str, Any]:
        """The librdkafka properties the producer was created with (a copy)."""
        return dict(self._config)

    @property
    def topics(self) -> TopicSettings:
        return self._topics

    # ------------------------------------------------------------ blocking API
    # Each returns when every message is acknowledged or failed, or when
    # timeout_s passes (then the unacknowledged ones are reported failed).

    def send_store_events(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True, timeout_s: float | None = None) -> BatchResult:
        """storage_queue (key: series key) and, with_receipt, log_queue (key: trace_id)."""
        return self._send(self._store_segments(events, with_receipt), timeout_s)

    def send_store_event(self, event: DicomStoreMeta, *, with_receipt: bool = True, timeout_s: float | None = None) -> BatchResult:
        """One store event (the receiver's case): a batch of one."""
        return self.send_store_events((event,), with_receipt=with_receipt, timeout_s=timeout_s)

    def send_states(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        """dicom_state_queue, key md5(tenant_patient_study_series)."""
        return self._send(self._model_segments(self._topics.dicom_state, states), timeout_s)

    def send_images(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        """dicom_image_queue, key md5(tenant_patient_study_series_sop)."""
        return self._send(self._model_segments(self._topics.dicom_image, images), timeout_s)

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        """audit_queue, key tenant id."""
        return self._send(self._model_segments(self._topics.audit, events), timeout_s)

    def send_raw(self, topic: str, items: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]], timeout_s: float | None = None) -> BatchResult:
        """(key, value, headers) tuples to any topic (used for the dead-letter topic)."""
        return self._send(self._raw_segments(topic, items), timeout_s)

    # ------------------------------------------------------------ asyncio API
    # Awaitable: messages are queued in chunks with yields between them, a
    # full queue is waited out with asyncio.sleep, and the acknowledgement
    # resolves a future from the poll thread. The event loop never blocks.

    async def send_store_events_async(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True, timeout_s: float | None = None) -> BatchResult:
        return await self._send_async(self._store_segments(events, with_receipt), timeout_s)

    async def send_store_event_async(self, event: DicomStoreMeta, *, with_receipt: bool = True, timeout_s: float | None = None) -> BatchResult:
        return await self.send_store_events_async((event,), with_receipt=with_receipt, timeout_s=timeout_s)

    async def send_states_async(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        return await self._send_async(self._model_segments(self._topics.dicom_state, states), timeout_s)

    async def send_images_async(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        return await self._send_async(self._model_segments(self._topics.dicom_image, images), timeout_s)

    async def send_audit_async(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        return await self._send_async(self._model_segments(self._topics.audit, events), timeout_s)

    async def send_raw_async(self, topic: str, items: Sequence[RawMessage], timeout_s: float | None = None) -> BatchResult:
        return await self._send_async(self._raw_segments(topic, items), timeout_s)

    # ------------------------------------------------------------ lifecycle

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding messages; returns how many are still pending."""
        return int(self._producer.flush(timeout_s))

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, then stop the poll thread. Idempotent.

        Messages still unacknowledged after ``timeout_s`` are purged, so
        their senders get a failure report rather than waiting forever.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        pending = self._producer.flush(timeout_s)
        if pending:
            log.warning("%d Kafka message(s) not acknowledged %.0f s after close; reporting them failed", pending, timeout_s)
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(1.0)
        self._stop.set()
        self._poller.join()
        self._producer.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------ building batches

    def _store_segments(self, events: Sequence[DicomStoreMeta], with_receipt: bool) -> list[_Segment]:
        """storage_queue keyed by series, then (with_receipt) log_queue keyed by trace_id, same payloads."""
        values = encode_many(list(events))
        segments = [_Segment(0, self._topics.main, _series_keys(events), values)]
        if with_receipt:
            segments.append(_Segment(len(values), self._topics.log, [e.trace_id for e in events], values))
        return segments

    @staticmethod
    def _model_segments(topic: str, messages: Sequence[DicomStateMeta] | Sequence[DicomImageMeta] | Sequence[AuditEvent]) -> list[_Segment]:
        return [_Segment(0, topic, [m.key() for m in messages], encode_many(list(messages)))]

    @staticmethod
    def _raw_segments(topic: str, items: Sequence[RawMessage]) -> list[_Segment]:
        keys = [k for k, _, _ in items]
        values = [v for _, v, _ in items]
        headers = [cast("_ProduceHeaders | None", h) for _, _, h in items]
        return [_Segment(0, topic, keys, values, headers if any(headers) else None)]

    # ------------------------------------------------------------ sending

    def _check_open(self) -> None:
        if self._closed:
            raise PublisherClosedError("the publisher is closed; nothing was sent")
        if self._fatal is not None:
            raise PublishError(f"the Kafka producer hit a fatal error and cannot send any more: {self._fatal.str()}")

    def _send(self, segments: list[_Segment], timeout_s: float | None) -> BatchResult:
        """Queue every message, then wait for their reports (blocking API)."""
        self._check_open()
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        tracker = _Tracker(segments, self._describe)
        gave_up: str | None = None
        for segment in segments:
            i = 0
            full_since: float | None = None
            while i < len(segment):
                if gave_up:
                    self._fail_rest(tracker, segment, i, gave_up)
                    break
                i = self._produce_range(tracker, segment, i)
                if i < len(segment):  # local queue full: serve deliveries to make room
                    full_since = full_since or time.monotonic()
                    gave_up = self._full_queue_verdict(full_since, deadline)
                    if not gave_up:
                        self._producer.poll(_FULL_QUEUE_WAIT_S)
                else:
                    full_since = None
        wait_s = self._wait_default_s if deadline is None else deadline - time.monotonic()
        wait_until = time.monotonic() + max(wait_s, 0.0)
        with self._waiting():
            # An acknowledgement usually takes about a millisecond: serve it on this thread
            # with short flushes (each also makes librdkafka send at once), then sleep.
            eager_until = min(time.monotonic() + _EAGER_WAIT_S, wait_until)
            while not tracker.done and time.monotonic() < eager_until:
                self._producer.flush(0.001)
            if not tracker.wait(wait_until - time.monotonic()):
                tracker.abandon(self._timeout_reason(timeout_s))
        return self._log_outcome(tracker.result, segments, started)

    async def _send_async(self, segments: list[_Segment], timeout_s: float | None) -> BatchResult:
        """Queue every message in chunks, yielding to the loop, then await the reports."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[BatchResult] = loop.create_future()
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        tracker = _Tracker(segments, self._describe, _resolver(loop, future))
        gave_up: str | None = None
        for segment in segments:
            i = 0
            full_since: float | None = None
            while i < len(segment):
                if gave_up:
                    self._fail_rest(tracker, segment, i, gave_up)
                    break
                end = min(i + _ASYNC_CHUNK, len(segment))
                reached = self._produce_range(tracker, segment, i, end)
                if reached < end:  # local queue full: the poll thread makes room
                    full_since = full_since or time.monotonic()
                    gave_up = self._full_queue_verdict(full_since, deadline)
                    if not gave_up:
                        await asyncio.sleep(_FULL_QUEUE_WAIT_S)
                else:
                    full_since = None
                    await asyncio.sleep(0)
                i = reached
        wait_s = self._wait_default_s if deadline is None else deadline - time.monotonic()
        with self._waiting():
            try:
                await asyncio.wait_for(asyncio.shield(future), max(wait_s, 0.0))
            except TimeoutError:
                tracker.abandon(self._timeout_reason(timeout_s))
        return self._log_outcome(tracker.result, segments, started)

    def _produce_range(self, tracker: _Tracker, segment: _Segment, begin: int, end: int | None = None) -> int:
        """Hand messages ``begin .. end-1`` of a segment to librdkafka; return the index reached.

        Stops early (returning a smaller index) only when the local queue is
        full. A message librdkafka refuses outright (too large, unknown
        partition) is recorded failed and skipped. This is the hot path: no
        encoding, no flush, one C call per message.
        """
        produce = self._producer.produce
        on_delivery = tracker.on_delivery
        partial = functools.partial
        topic, keys, values, headers = segment.topic, segment.keys, segment.values, segment.headers
        start = segment.start
        stop = len(values) if end is None else end
        i = begin
        while i < stop:
            try:
                if headers is None:
                    while i < stop:
                        produce(topic, values[i], keys[i], on_delivery=partial(on_delivery, start + i))
                        i += 1
                else:
                    while i < stop:
                        produce(topic, values[i], keys[i], headers=headers[i],
                                on_delivery=partial(on_delivery, start + i))
                        i += 1
            except BufferError:
                return i
            except KafkaException as exc:
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                tracker.fail(start + i, self._describe(error) if error is not None else str(exc))
                i += 1
        return i

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Mark a caller as waiting for its acknowledgements, so nothing lingers meanwhile.

        ``linger.ms`` lets a producer that keeps producing fill larger
        batches. A batch call that waits for its own acknowledgements has
        nothing more to add, so lingering after its last message is pure
        latency (a receiver sending one event per C-STORE would pay it on
        every instance). While anyone waits, the poll thread serves reports
        with ``flush`` (which makes librdkafka treat linger as elapsed)
        instead of ``poll``; the zero-timeout flush here starts the send
        at once. None of this blocks on other callers' messages, unlike the
        reference's flush after every message.
        """
        with self._waiters_lock:
            self._waiters += 1
        try:
            self._producer.flush(0)
            yield
        finally:
            with self._waiters_lock:
                self._waiters -= 1

    def _full_queue_verdict(self, full_since: float, deadline: float | None) -> str | None:
        """Why a sender waiting for queue space should stop, or None to keep waiting.

        It stops at the caller's deadline, or when no room appeared for longer
        than ``message.timeout.ms`` (by then librdkafka has failed the queued
        messages, so room should have come: something is badly wrong).
        """
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return "local producer queue still full at the send deadline"
        if now - full_since > self._wait_default_s:
            return f"local producer queue full for {now - full_since:.0f} s"
        return None

    def _fail_rest(self, tracker: _Tracker, segment: _Segment, begin: int, why: str) -> None:
        """Report messages ``begin ..`` of a segment failed without sending them."""
        for j in range(begin, len(segment)):
            tracker.fail(segment.start + j, f"not sent: {why} (brokers {self._kafka.brokers})")

    # ------------------------------------------------------------ reporting

    def _describe(self, err: KafkaError) -> str:
        """A failure reason a reader can act on, from a librdkafka error."""
        text = f"{err.str()} ({err.name()})"
        if err.code() == KafkaError._MSG_TIMED_OUT:
            return (f"{text}: no acknowledgement from {self._kafka.brokers} within "
                    f"message.timeout.ms={self._kafka.message_timeout_ms}; broker unreachable or overloaded")
        return text

    def _timeout_reason(self, timeout_s: float | None) -> str:
        waited = self._wait_default_s if timeout_s is None else timeout_s
        return (f"no acknowledgement from {self._kafka.brokers} within {waited:.1f} s "
                "(the message may still be delivered later)")

    def _log_outcome(self, result: BatchResult, segments: list[_Segment], started: float) -> BatchResult:
        elapsed_ms = (time.monotonic() - started) * 1000
        topics = ",".join(s.topic for s in segments)
        if result.failures:
            first = result.failures[0]
            log.warning("%d of %d message(s) to %s not delivered after %.0f ms; first: #%d key=%s: %s",
                        len(result.failures), len(result.failures) + result.delivered, topics, elapsed_ms,
                        first.index, first.key, first.reason)
        else:
            log.debug("%d message(s) to %s acknowledged in %.1f ms", result.delivered, topics, elapsed_ms)
        return result

    # ------------------------------------------------------------ background

    def _poll_loop(self) -> None:
        """Serve delivery reports, error and log callbacks until :meth:`close`."""
        while not self._stop.is_set():
            try:
                if not self._waiters:
                    self._producer.poll(_IDLE_POLL_S)
                elif self._producer.flush(_IDLE_POLL_S) == 0:  # nothing outstanding: do not spin
                    self._producer.poll(0.005)
            except Exception:  # noqa: BLE001 - keep serving reports; a dead poller would hang every sender
                log.exception("polling the Kafka producer failed")
                time.sleep(0.1)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (broker down, authentication). Never raises."""
        try:
            if err.fatal():
                self._fatal = err
                log.error("Kafka producer fatal error, no further sends possible: %s", err.str())
                return
            now = time.monotonic()
            if now - self._error_last.get(err.code(), -_ERROR_REPEAT_S) >= _ERROR_REPEAT_S:
                self._error_last[err.code()] = now
                log.warning("Kafka client error (%s): %s", err.name(), err.str())
        except Exception:  # noqa: BLE001 - runs inside poll()
            log.exception("handling a Kafka client error failed")


__all__ = ["BatchResult", "DeliveryFailure", "Headers", "Publisher", "RawMessage"]
