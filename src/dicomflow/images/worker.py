"""The image workers: series thumbnails and NeedTransfer copies, from ``dicom_image_queue``.

One consumer group (``images.group_id``) on the instance events the
consumer publishes after indexing. For each batch:

1. per event, the instance's newest receipt is read from PostgreSQL; a
   ``NeedTransfer`` instance is transcoded to its ``target_ts`` into a
   served copy next to the original, ``{series folder}/.served/{sop}.{ts}.dcm``
   (the original is never touched);
2. per series touched, the middle instance by InstanceNumber (WADO-RS's
   order) is rendered as the series thumbnail,
   ``{series folder}/.served/thumbnail.jpg``; a series has one thumbnail file
   and one row carrying ``thumbnail_location``;
3. PostgreSQL, one transaction: ``pixel_data_location``,
   ``thumbnail_location``, the receipt's ``transfer_status`` (``Success``, or
   ``Failed`` with ``transfer_reason``);
4. the changed instance rows are republished to ``dicom_image_queue`` (the
   warehouse keeps the latest version per key) and undecodable ones go to
   ``dicom_image_queue.dlq`` with the consumer's dead-letter headers; both
   acknowledged;
5. only then are the batch's offsets committed.

Faults are handled with the consumer loops' toolkit (:mod:`dicomflow.kafka.retry`):
an event that can never be processed (poison, :func:`dicomflow.errors.is_poison`)
is dead-lettered and its offset committed; a transient failure (PostgreSQL,
Kafka, the disk) pauses the partitions and retries the batch with backoff
while the consumer keeps polling; when PostgreSQL refuses a value of the
batch, its events are processed one by one and the refused ones
dead-lettered. The stop event (SIGTERM) is seen within a poll, also in the
middle of a backoff. The database connection is the store's
(:class:`~dicomflow.store.connection.StoreConnection`: reconnects, errors
classified by SQLSTATE).

Outputs are written atomically (temporary file, fsync, rename) before the
database points at them; a crash anywhere replays the batch, which rewrites
the same files under the same names and sets the same values: idempotent.
The ``.served`` folder starts with a dot, so ``dicomflow publish`` over the
storage root never takes a copy for an instance of its own.

**Why republishing does not loop**: republished events carry the header
``dicomflow.origin: images``, and the workers skip events with it (they
describe work already done). An event without it whose outputs already
exist (a replay) is recognised from PostgreSQL and the files, and skipped
too, without republishing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dicomflow.errors import DicomflowError, is_poison
from dicomflow.images.outputs import ORIGIN, ORIGIN_HEADER, BatchOutputs, Outputs
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.dlq import DeadLetters, Poison, dead_letter_topic
from dicomflow.kafka.group import OwnershipLostError
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.records import TP, Record
from dicomflow.kafka.retry import POLL_MAX_S, PausedRetry
from dicomflow.kafka.routing import RawMessage
from dicomflow.metrics.health import Health
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.models import DicomImageMeta, encode
from dicomflow.settings import Settings
from dicomflow.store.connection import StoreConnection

log = logging.getLogger(__name__)

#: DLQ error class of an event whose outputs PostgreSQL refuses (a location too long ...).
DATABASE_REJECTED = "database-rejected"


@dataclass
class Summary:
    consumed: int = 0
    skipped: int = 0
    thumbnails: int = 0
    transcoded: int = 0
    dead_lettered: int = 0
    republished: int = 0
    batches: int = 0
    stopped_because: str = ""


class ImageWorker:
    """One member of the image workers' group; :meth:`run` until stopped, idle or the message budget is spent."""

    def __init__(self, settings: Settings, metrics: ImagesMetrics, *, max_messages: int | None = None,
                 until_idle_s: float | None = None, on_batch: Callable[[Summary], None] | None = None,
                 health: Health | None = None, stop: threading.Event | None = None) -> None:
        """``stop``: the event that ends :meth:`run` (the CLI's signal handlers set it)."""
        self.settings = settings
        self.metrics = metrics
        self.max_messages = max_messages
        self.until_idle_s = until_idle_s
        self.on_batch = on_batch
        self.health = health
        self.outputs = Outputs(settings)
        self.dlq_topic = dead_letter_topic(settings.topics.dicom_image)
        self._stop = stop if stop is not None else threading.Event()
        self._retry = PausedRetry(settings.consumer.retry_initial_ms, settings.consumer.retry_max_ms, self._stop)
        self._db = StoreConnection(settings.database)
        #: Records fetched while a batch was backing off, taken before the next consume.
        self._held: list[Record] = []
        self.summary = Summary()

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from :meth:`run` (signal-safe)."""
        self._stop.set()

    # ------------------------------------------------------------------ the loop

    def run(self) -> Summary:
        s = self.settings
        consumer = KafkaConsumer(s.kafka, group_id=s.images.group_id, session_timeout_ms=s.images.session_timeout_ms,
                                 max_poll_interval_ms=s.images.max_poll_interval_ms, client_id="dicomflow-images")
        publisher = Publisher(s.kafka, s.topics, client_id="dicomflow-images")
        if self.health is not None:
            self.health.started()
        try:
            consumer.subscribe([s.topics.dicom_image])
            self._consume(consumer, publisher)
        finally:
            if self.health is not None:
                self.health.stopped()
            self._db.discard()
            publisher.close(10.0)
            consumer.close()
        return self.summary

    def _consume(self, consumer: KafkaConsumer, publisher: Publisher) -> None:
        images = self.settings.images
        idle_since = time.monotonic()
        while not self._stop.is_set():
            budget = images.batch_max_messages
            if self.max_messages is not None:
                budget = min(budget, self.max_messages - self.summary.consumed)
                if budget <= 0:
                    self.summary.stopped_because = f"--max-messages {self.max_messages} reached"
                    break
            records = self._take(consumer, budget, min(images.batch_max_ms / 1000, POLL_MAX_S))
            if not records:
                if not consumer.assignment():
                    idle_since = time.monotonic()
                elif self.until_idle_s is not None and time.monotonic() - idle_since >= self.until_idle_s:
                    self.summary.stopped_because = f"idle for {self.until_idle_s:g} s"
                    break
                continue
            idle_since = time.monotonic()
            self._process_until_done(records, consumer, publisher)
        if not self.summary.stopped_because:
            self.summary.stopped_because = "stopped by signal"
        log.info("image worker stopping: %s", self.summary.stopped_because)

    def _take(self, consumer: KafkaConsumer, budget: int, timeout_s: float) -> list[Record]:
        """The records held from a backoff first, else one consume call."""
        if self._held:
            taken, self._held = self._held[:budget], self._held[budget:]
            return taken
        records = consumer.consume(budget, timeout_s)
        if self.health is not None:
            self.health.beat()
        return records

    def _poll_while_waiting(self, consumer: KafkaConsumer) -> Callable[[float], object]:
        def poll(timeout_s: float) -> None:
            records = consumer.consume(self.settings.images.batch_max_messages, timeout_s)
            if self.health is not None:
                self.health.beat()
            if records:
                self._retry.hold_new(consumer, (r.tp for r in records))
                self._held.extend(records)
        return poll

    def _process_until_done(self, records: list[Record], consumer: KafkaConsumer, publisher: Publisher) -> None:
        """Process and commit one batch: poison dead-lettered, transient faults retried with backoff."""
        started = time.perf_counter()
        one_by_one = dropped = False
        done: list[BatchOutputs] = []

        def step() -> None:
            nonlocal dropped
            done.clear()
            try:
                if one_by_one:
                    done.extend(self._each_alone(records, publisher))
                else:
                    done.append(self._batch(records, publisher))
                consumer.commit(_next_offsets(records), timeout_s=self.settings.consumer.commit_timeout_ms / 1000)
            except OwnershipLostError as exc:
                log.warning("partitions moved to another worker; their batch is dropped: %s", exc)
                dropped = True

        def split(exc: DicomflowError) -> bool:
            nonlocal one_by_one
            log.warning("PostgreSQL refused the outputs of a batch of %d events (%s); one by one", len(records), exc)
            was, one_by_one = one_by_one, True
            return not was  # already one by one: back off like a transient fault

        def count_retry(_exc: Exception) -> None:
            self.metrics.retries.inc()

        try:
            ok = self._retry.attempt(step, consumer, self._poll_while_waiting(consumer),
                                     what=f"image batch of {len(records)} events", on_retry=count_retry,
                                     on_poison=split)
        finally:
            self._retry.resume(consumer)
        if not ok:
            self.summary.stopped_because = "stopped by signal (batch not committed)"
            return
        if dropped:  # its new owner processes it (the outputs written meanwhile are rewritten the same)
            return
        for batch in done:
            self._account(batch)
        self.metrics.batch_seconds.observe(time.perf_counter() - started)
        self.summary.consumed += len(records)
        self.summary.batches += 1
        self.metrics.consumed.inc(len(records))
        if self.on_batch is not None:
            self.on_batch(self.summary)

    def _each_alone(self, records: list[Record], publisher: Publisher) -> list[BatchOutputs]:
        """Each event as its own batch; one whose outputs PostgreSQL refuses is dead-lettered."""
        out: list[BatchOutputs] = []
        for record in records:
            try:
                out.append(self._batch([record], publisher))
            except DicomflowError as exc:
                if not is_poison(exc):
                    raise
                alone = BatchOutputs(dead=[Poison(record, DATABASE_REJECTED, str(exc))])
                self._publish(publisher, [], alone)
                out.append(alone)
        return out

    def _account(self, batch: BatchOutputs) -> None:
        """Counters and metrics of a committed batch (once, however many attempts it took)."""
        m, s = self.metrics, self.summary
        for reason, n in batch.skipped.items():
            m.skipped.labels(reason).inc(n)
            if reason == "own-republish":
                s.skipped += n
        copies = sum(1 for t in batch.transcoded if t.location is not None)
        m.outputs.labels("transcoded").inc(copies)
        m.outputs.labels("thumbnail").inc(len(batch.thumbnails))
        s.transcoded += copies
        s.thumbnails += len(batch.thumbnails)
        for p in batch.dead:
            log.warning("%s dead-lettered (%s): %s", p.record.source, p.error_class, p.reason)
            m.failed.labels(p.error_class).inc()
        m.dead_lettered.inc(len(batch.dead))
        s.dead_lettered += len(batch.dead)
        m.republished.inc(batch.republished)
        s.republished += batch.republished

    # ------------------------------------------------------------------ one batch

    def _batch(self, records: list[Record], publisher: Publisher) -> BatchOutputs:
        """Outputs and their rows (one PostgreSQL transaction), then the events, acknowledged.

        Raises:
            StoreError: PostgreSQL failed (transient) or refused a value (poison, StoreDataError).
            TransientError: the disk or Kafka failed.
        """
        batch, events = self._db.run("image outputs", lambda conn: self.outputs.produce(records, conn))
        self._publish(publisher, events, batch)
        return batch

    def _publish(self, publisher: Publisher, events: list[DicomImageMeta], batch: BatchOutputs) -> None:
        """Republish the changed rows and dead-letter the rest; both acknowledged before returning.

        Raises:
            PublishError: Kafka did not acknowledge some message (transient).
        """
        timeout = self.settings.kafka.message_timeout_ms / 1000 + 5.0
        if events:
            items: list[RawMessage] = [(e.key().encode(), encode(e), [(ORIGIN_HEADER, ORIGIN)]) for e in events]
            publisher.send_raw(self.settings.topics.dicom_image, items, timeout_s=timeout).raise_for_failures()
            batch.republished = len(events)
        if batch.dead:
            letters = DeadLetters()
            for p in batch.dead:
                letters.add(self.dlq_topic, p.letter(node_id=self.settings.worker_node_id))
            letters.publish(publisher, timeout_s=timeout)


def _next_offsets(records: list[Record]) -> dict[TP, int]:
    out: dict[TP, int] = {}
    for r in records:
        out[r.tp] = max(out.get(r.tp, 0), r.offset + 1)
    return out


__all__ = ["DATABASE_REJECTED", "ImageWorker", "Summary"]
