"""The send engine: one idempotent librdkafka producer, its poll thread, and how a batch is sent.

Threads: a background thread polls the producer, which runs librdkafka's
delivery callbacks (they only record outcomes in a
:class:`~dicomflow.kafka.delivery.Tracker`); the outcome reaches the caller
on the caller's thread, or resolves an asyncio future (:mod:`dicomflow.kafka.aio`).
One engine is safe to share between threads and event loops.

Sending is two phases, shared by the blocking and the asyncio API:

1. :meth:`SendEngine.queue` hands every message to librdkafka. It is a
   generator: each time the local queue is full (``BufferError``) it yields
   ``True`` and the driver waits for room (blocking: serves deliveries with
   ``poll``; asyncio: ``asyncio.sleep``), then it tries again; it never drops
   a message and never crashes. With ``chunk`` set it also yields ``False``
   after every ``chunk`` messages, so an event loop gets its turn.
2. waiting for the reports, bounded by the caller's timeout or by
   ``message.timeout.ms`` plus a grace period; what is not acknowledged by
   then is reported failed. If the broker is unreachable, librdkafka reports
   each queued message failed once ``message.timeout.ms`` has passed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from dicomflow.errors import ConfigError
from dicomflow.kafka._auth import AuthWatch
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.config import producer_config, redacted
from dicomflow.kafka.delivery import BatchResult, Segment, Tracker
from dicomflow.kafka.exceptions import KafkaAuthError, PublisherClosedError
from dicomflow.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Seconds a sender sleeps (async) or polls (blocking) when the local queue is full.
FULL_QUEUE_WAIT_S = 0.01
#: Seconds added to message.timeout.ms before a blocking send stops waiting by itself.
_GRACE_S = 5.0
#: Seconds a blocking sender serves its own acknowledgements before sleeping on them.
_EAGER_WAIT_S = 0.01
#: Longest the poll thread blocks in one call (it notices new waiters at this pace).
_IDLE_POLL_S = 0.01
#: Seconds between two warnings with the same librdkafka error code.
_ERROR_REPEAT_S = 30.0


class SendEngine:
    """One producer per process, polled by a background thread until :meth:`close`.

    Raises:
        ConfigError: (from the constructor) librdkafka rejects a property, or
            ``kafka.client`` tries to turn off acks=all or idempotence.
    """

    def __init__(self, kafka: KafkaSettings, *, client_id: str = "dicomflow-producer") -> None:
        self._kafka = kafka
        self._config = producer_config(kafka, client_id=client_id)
        self._wait_default_s = kafka.message_timeout_ms / 1000 + _GRACE_S
        self._error_last: dict[int, float] = {}
        self._fatal: KafkaError | None = None
        #: How often the producer was rebuilt after a fatal error (see :meth:`_rebuild`).
        self.rebuilds = 0
        self._rebuild_lock = threading.Lock()
        # Batches waiting for acknowledgements: an authentication / TLS failure fails them at once.
        self._open: set[Tracker] = set()
        self._open_lock = threading.Lock()
        self._auth = AuthWatch(kafka.brokers, f"producer {client_id}", then=self._on_error, on_failure=self._fail_open)
        self._producer = self._new_producer()
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


    def _new_producer(self) -> Producer:
        try:
            return Producer({**self._config, "error_cb": self._auth, "logger": librdkafka_log})
        except KafkaException as exc:
            raise ConfigError("kafka", "settings", f"the Kafka client rejected its configuration: {exc}") from exc

    def _rebuild(self) -> None:
        """Replace a producer that hit a fatal error with a new one; fail what the old one held.

        A fatal librdkafka error (idempotence broken: out-of-sequence or
        fenced producer id, ...) leaves the producer unable to send anything
        ever again. Rebuilding in place, rather than exiting, keeps a
        receiver's associations and a consumer's group membership: only the
        batches in flight at that moment are reported failed (the receiver
        answers a failure status, the consumer retries the batch), and the
        next send goes through the new producer, with a new producer id.
        A message of a failed batch may have been written before the error,
        so a retry can duplicate it: at-least-once, harmless downstream
        because every write there is an upsert. Runs on the poll thread (or
        a sender, whichever sees the error first), never inside a callback.
        """
        with self._rebuild_lock:
            fatal = self._fatal
            if fatal is None or self._closed:
                return
            with self._open_lock:  # the batches of the old producer
                stranded = list(self._open)
            old = self._producer
            self._producer = self._new_producer()
            self._fatal = None
            self.rebuilds += 1
        reason = f"the Kafka producer hit a fatal error ({fatal.name()}: {fatal.str()}) and was rebuilt; not sent"
        log.error("Kafka producer rebuilt after a fatal error (%s: %s); %d batch(es) in flight reported failed (rebuild #%d)",
                  fatal.name(), fatal.str(), len(stranded), self.rebuilds)
        for tracker in stranded:  # first, so their reports name the cause (the purge's come too late)
            tracker.abandon(reason)
        try:
            old.purge(in_queue=True, in_flight=True, blocking=False)
            old.flush(1.0)
        except (KafkaException, RuntimeError) as exc:
            log.warning("releasing the failed Kafka producer: %s", exc)

    @property
    def config(self) -> dict[str, Any]:
        """The librdkafka properties the producer was created with (a copy)."""
        return dict(self._config)

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
        pending = self._flush_unless_refused(timeout_s)
        if pending:
            why = "the broker refused the connection" if self._auth.failure else f"{timeout_s:.0f} s after close"
            log.warning("%d Kafka message(s) not acknowledged (%s); reporting them failed", pending, why)
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.flush(1.0)
        self._stop.set()
        self._poller.join()
        self._producer.close()


    def _flush_unless_refused(self, timeout_s: float) -> int:
        """Flush for up to ``timeout_s``, but stop as soon as the broker refuses our credentials."""
        deadline = time.monotonic() + timeout_s
        pending = int(self._producer.flush(min(timeout_s, 0.5)))
        while pending and self._auth.failure is None and time.monotonic() < deadline:
            pending = int(self._producer.flush(min(max(deadline - time.monotonic(), 0.0), 0.5)))
        return pending

    # ------------------------------------------------------------ sending

    def start(
        self, segments: list[Segment], timeout_s: float | None, on_done: Callable[[BatchResult], None] | None = None
    ) -> tuple[Tracker, float, float | None]:
        """Open a batch: its tracker, its start time and its deadline (None: no caller deadline).

        Raises:
            PublisherClosedError: the engine is closed; nothing was sent.
            KafkaAuthError: the broker refused the credentials or its certificate is not
                trusted (seen within the last minute); nothing was sent.
        """
        if self._closed:
            raise PublisherClosedError("the publisher is closed; nothing was sent")
        if self._fatal is not None:  # seen by the callback, not yet handled by the poll thread
            self._rebuild()
        self._auth.check()
        started = time.monotonic()
        deadline = None if timeout_s is None else started + timeout_s
        holder: list[Tracker] = []

        def done(result: BatchResult) -> None:
            with self._open_lock:
                self._open.difference_update(holder)
            if on_done is not None:
                on_done(result)

        tracker = Tracker(segments, self.describe, done)
        holder.append(tracker)
        with self._open_lock:
            if not tracker.done:
                self._open.add(tracker)
        return tracker, started, deadline

    def _fail_open(self, failure: KafkaAuthError) -> None:
        """Report every batch still waiting failed with the authentication / TLS failure (poll thread)."""
        with self._open_lock:
            waiting = list(self._open)
        for tracker in waiting:
            tracker.abandon(str(failure))

    def queue(self, tracker: Tracker, segments: list[Segment], deadline: float | None,
              chunk: int | None = None) -> Iterator[bool]:
        """Hand every message to librdkafka; yield True to wait for queue room, False after a chunk.

        Messages that cannot be queued by the deadline (or after the queue
        stayed full for longer than ``message.timeout.ms``) are reported
        failed without being sent.
        """
        gave_up: str | None = None
        for segment in segments:
            i = 0
            n = len(segment)
            full_since: float | None = None
            while i < n:
                if gave_up:
                    self._fail_rest(tracker, segment, i, gave_up)
                    break
                end = n if chunk is None else min(i + chunk, n)
                reached = self._produce_range(tracker, segment, i, end)
                if reached < end:  # local queue full: deliveries must make room
                    full_since = full_since or time.monotonic()
                    gave_up = self._full_queue_verdict(full_since, deadline)
                    if not gave_up:
                        yield True
                else:
                    full_since = None
                    if chunk is not None:
                        yield False
                i = reached

    def wait_budget(self, deadline: float | None) -> float:
        """Seconds left to wait for acknowledgements (never negative)."""
        wait_s = self._wait_default_s if deadline is None else deadline - time.monotonic()
        return max(wait_s, 0.0)

    def send(self, segments: list[Segment], timeout_s: float | None) -> BatchResult:
        """Queue every message, then wait for their reports (the blocking API)."""
        tracker, started, deadline = self.start(segments, timeout_s)
        for _full in self.queue(tracker, segments, deadline):
            self._producer.poll(FULL_QUEUE_WAIT_S)
        wait_until = time.monotonic() + self.wait_budget(deadline)
        with self.waiting():
            # An acknowledgement usually takes about a millisecond: serve it on this thread
            # with short flushes (each also makes librdkafka send at once), then sleep.
            eager_until = min(time.monotonic() + _EAGER_WAIT_S, wait_until)
            while not tracker.done and time.monotonic() < eager_until:
                self._producer.flush(0.001)
            if not tracker.wait(wait_until - time.monotonic()):
                tracker.abandon(self.timeout_reason(timeout_s))
        return self.log_outcome(tracker.result, segments, started)

    def _produce_range(self, tracker: Tracker, segment: Segment, begin: int, end: int | None = None) -> int:
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
                tracker.fail(start + i, self.describe(error) if error is not None else str(exc))
                i += 1
        return i

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Mark a caller as waiting for its acknowledgements, so nothing lingers meanwhile.

        ``linger.ms`` lets a producer that keeps producing fill larger
        batches. A batch call that waits for its own acknowledgements has
        nothing more to add, so lingering after its last message is pure
        latency (a receiver sending one event per C-STORE would pay it on
        every instance). While anyone waits, the poll thread serves reports
        with ``flush`` (which makes librdkafka treat linger as elapsed)
        instead of ``poll``; the zero-timeout flush here starts the send
        at once. None of this blocks on other callers' messages, unlike the
        Rust reference producer's flush after every message (docs/architecture.md).
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

    def _fail_rest(self, tracker: Tracker, segment: Segment, begin: int, why: str) -> None:
        """Report messages ``begin ..`` of a segment failed without sending them."""
        for j in range(begin, len(segment)):
            tracker.fail(segment.start + j, f"not sent: {why} (brokers {self._kafka.brokers})")

    # ------------------------------------------------------------ reporting

    def describe(self, err: KafkaError) -> str:
        """A failure reason a reader can act on, from a librdkafka error."""
        text = f"{err.str()} ({err.name()})"
        if err.code() == KafkaError._MSG_TIMED_OUT:
            return (f"{text}: no acknowledgement from {self._kafka.brokers} within "
                    f"message.timeout.ms={self._kafka.message_timeout_ms}; broker unreachable or overloaded")
        return text

    def timeout_reason(self, timeout_s: float | None) -> str:
        waited = self._wait_default_s if timeout_s is None else timeout_s
        return (f"no acknowledgement from {self._kafka.brokers} within {waited:.1f} s "
                "(the message may still be delivered later)")

    def log_outcome(self, result: BatchResult, segments: list[Segment], started: float) -> BatchResult:
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
                if self._fatal is not None:
                    self._rebuild()
                if not self._waiters:
                    self._producer.poll(_IDLE_POLL_S)
                elif self._producer.flush(_IDLE_POLL_S) == 0:  # nothing outstanding: do not spin
                    self._producer.poll(0.005)
            except Exception:
                log.exception("polling the Kafka producer failed")
                time.sleep(0.1)

    def _on_error(self, err: KafkaError) -> None:
        """librdkafka's client-level errors (broker down, authentication). Never raises."""
        try:
            if err.fatal():
                self._fatal = err  # the poll thread rebuilds the producer (never inside a callback)
                log.error("Kafka producer fatal error (%s): %s; rebuilding the producer", err.name(), err.str())
                return
            now = time.monotonic()
            if now - self._error_last.get(err.code(), -_ERROR_REPEAT_S) >= _ERROR_REPEAT_S:
                self._error_last[err.code()] = now
                log.warning("Kafka client error (%s): %s", err.name(), err.str())
        except Exception:
            log.exception("handling a Kafka client error failed")



__all__ = ["FULL_QUEUE_WAIT_S", "SendEngine"]
