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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dicomflow.errors import DicomflowError, WireFormatError
from dicomflow.imaging.render import RenderError, RenderOptions, render
from dicomflow.imaging.transcode import WRITABLE, TranscodeError, transcode
from dicomflow.ingest.storage import write_atomic
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.dlq import dead_letter_record, dead_letter_topic
from dicomflow.kafka.group import OwnershipLostError
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.records import TP, Record
from dicomflow.kafka.routing import RawMessage
from dicomflow.metrics.health import Health
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.models import DicomImageMeta, decode, encode, now
from dicomflow.settings import Settings
from dicomflow.store.images import InstanceKey, SeriesKey, Transcoded, instance_files, record_outputs, series_order

log = logging.getLogger(__name__)

ORIGIN_HEADER = "dicomflow.origin"
ORIGIN = b"images"
SERVED = ".served"
THUMBNAIL = "thumbnail.jpg"


class TransientError(DicomflowError):
    """PostgreSQL, Kafka or the disk failed: the batch is retried, nothing committed."""


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


@dataclass
class _Batch:
    transcoded: list[Transcoded] = field(default_factory=list)
    thumbnails: list[tuple[InstanceKey, str]] = field(default_factory=list)
    dead: list[RawMessage] = field(default_factory=list)
    dead_offsets: set[tuple[str, int, int]] = field(default_factory=set)


def served_copy_path(original: Path, sop_uid: str, target_ts: str) -> Path:
    return original.parent / SERVED / f"{sop_uid}.{target_ts}.dcm"


def thumbnail_path(original: Path) -> Path:
    return original.parent / SERVED / THUMBNAIL


class ImageWorker:
    """One member of the image workers' group; :meth:`run` until stopped, idle or the message budget is spent."""

    def __init__(self, settings: Settings, metrics: ImagesMetrics, *, max_messages: int | None = None,
                 until_idle_s: float | None = None, on_batch: Callable[[Summary], None] | None = None,
                 health: Health | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        self.max_messages = max_messages
        self.until_idle_s = until_idle_s
        self.on_batch = on_batch
        self.health = health
        self.root = settings.storage.root.resolve()
        self.dlq_topic = dead_letter_topic(settings.topics.dicom_image)
        self._stop = False
        self.summary = Summary()

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from :meth:`run` (signal-safe)."""
        self._stop = True

    # ------------------------------------------------------------------ the loop

    def run(self) -> Summary:
        s = self.settings
        consumer = KafkaConsumer(s.kafka, group_id=s.images.group_id, session_timeout_ms=s.images.session_timeout_ms,
                                 max_poll_interval_ms=s.images.max_poll_interval_ms, client_id="dicomflow-images")
        publisher = Publisher(s.kafka, s.topics, client_id="dicomflow-images")
        conn: psycopg.Connection[Any] | None = None
        idle_since = time.monotonic()
        if self.health is not None:
            self.health.started()
        try:
            consumer.subscribe([s.topics.dicom_image])
            while not self._stop:
                budget = s.images.batch_max_messages
                if self.max_messages is not None:
                    budget = min(budget, self.max_messages - self.summary.consumed)
                    if budget <= 0:
                        self.summary.stopped_because = f"--max-messages {self.max_messages} reached"
                        break
                records = consumer.consume(budget, s.images.batch_max_ms / 1000)
                if self.health is not None:
                    self.health.beat()
                if not records:
                    if not consumer.assignment():
                        idle_since = time.monotonic()
                    elif self.until_idle_s is not None and time.monotonic() - idle_since >= self.until_idle_s:
                        self.summary.stopped_because = f"idle for {self.until_idle_s:g} s"
                        break
                    continue
                idle_since = time.monotonic()
                conn = self._process_until_done(records, conn, consumer, publisher)
            else:
                self.summary.stopped_because = "stopped by signal"
        finally:
            if self.health is not None:
                self.health.stopped()
            if conn is not None:
                conn.close()
            publisher.close(10.0)
            consumer.close()
        return self.summary

    def _process_until_done(self, records: list[Record], conn: psycopg.Connection[Any] | None,
                            consumer: KafkaConsumer, publisher: Publisher) -> psycopg.Connection[Any] | None:
        """Process and commit one batch, retrying transient faults with capped backoff."""
        delay = 0.2
        while True:
            started = time.perf_counter()
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.settings.database.conninfo(), autocommit=True)
                self._batch(records, conn, publisher)
                consumer.commit(_next_offsets(records))
            except OwnershipLostError as exc:
                log.warning("partitions moved to another worker; their batch is dropped: %s", exc)
                return conn
            except (psycopg.OperationalError, DicomflowError) as exc:  # transient: Kafka, PostgreSQL, disk
                self.metrics.retries.inc()
                log.error("batch of %d events failed (%s); retrying in %.1f s", len(records), exc, delay)
                if conn is not None and conn.broken:
                    conn = None
                if self._stop:
                    self.summary.stopped_because = "stopped by signal (batch not committed)"
                    return conn
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            self.summary.consumed += len(records)
            self.summary.batches += 1
            self.metrics.consumed.inc(len(records))
            if self.on_batch is not None:
                self.on_batch(self.summary)
            return conn

    # ------------------------------------------------------------------ one batch

    def _batch(self, records: list[Record], conn: psycopg.Connection[Any], publisher: Publisher) -> None:
        batch = _Batch()
        series: dict[SeriesKey, Record] = {}
        for record in records:
            if dict(record.headers).get(ORIGIN_HEADER) == ORIGIN:
                self.metrics.skipped.labels("own-republish").inc()
                self.summary.skipped += 1
                continue
            try:
                event = decode(record.value or b"", DicomImageMeta)
            except WireFormatError as exc:
                self._dead(batch, record, "wire-format", str(exc))
                continue
            key: InstanceKey = (event.tenant_id, event.study_uid, event.series_uid, event.sop_uid)
            self._transcode(batch, record, key, conn)
            series.setdefault(key[:3], record)
        for skey, record in series.items():
            self._thumbnail(batch, record, skey, conn)
        events = record_outputs(conn, batch.transcoded, batch.thumbnails, now())
        self._publish(publisher, events, batch.dead)

    def _original(self, file_path: str) -> Path | None:
        path = Path(file_path).resolve()
        return path if path.is_relative_to(self.root) else None

    def _transcode(self, batch: _Batch, record: Record, key: InstanceKey, conn: psycopg.Connection[Any]) -> None:
        files = instance_files(conn, key)
        if files is None:
            self._dead(batch, record, "not-indexed", f"instance {key[3]} of tenant {key[0]} is not in dicom_image_meta")
            return
        if files.transfer_status not in ("NeedTransfer", "Success") or files.target_ts == files.transfer_syntax_uid:
            return
        original = self._original(files.file_path)
        if original is None:
            self._dead(batch, record, "outside-storage-root", f"{files.file_path} is outside {self.root}")
            return
        out = served_copy_path(original, key[3], files.target_ts)
        if files.transfer_status == "Success" and files.pixel_data_location == str(out) and out.is_file():
            self.metrics.skipped.labels("done").inc()
            return
        if files.target_ts not in WRITABLE:
            reason = f"target transfer syntax {files.target_ts} is not one this archive writes"
        else:
            try:
                data = transcode(original, files.target_ts)
            except FileNotFoundError:
                self._dead(batch, record, "file-missing", f"{original} is missing")
                return
            except TranscodeError as exc:
                reason = f"cannot transcode {files.transfer_syntax_uid} to {files.target_ts}: {exc}"
            except OSError as exc:
                raise TransientError(f"reading {original}: {exc}") from exc
            else:
                write_atomic(out, (data,), fsync=self.settings.ingest.fsync)
                batch.transcoded.append(Transcoded(key, files.trace_id, str(out)))
                self.metrics.outputs.labels("transcoded").inc()
                self.summary.transcoded += 1
                return
        batch.transcoded.append(Transcoded(key, files.trace_id, None, reason))
        self._dead(batch, record, "undecodable-pixels", reason)

    def _thumbnail(self, batch: _Batch, record: Record, skey: SeriesKey, conn: psycopg.Connection[Any]) -> None:
        order = series_order(conn, skey)
        if not order:
            return
        sop, location = order[len(order) // 2]
        files = instance_files(conn, (*skey, sop))
        original = self._original(files.file_path) if files else None
        if original is None:
            return  # the instance's own event reports it
        out = thumbnail_path(original)
        holders = [s for s, loc in order if loc]
        if location == str(out) and holders == [sop] and out.is_file():
            self.metrics.skipped.labels("done").inc()
            return
        size = self.settings.images.thumbnail_size
        try:
            image = render(original, RenderOptions(viewport=(size, size)))
        except RenderError as exc:
            if "no image pixel data" in str(exc):
                self.metrics.skipped.labels("no-pixels").inc()
                log.debug("series %s has no image pixel data: no thumbnail", skey[2])
                return
            self._dead(batch, record, "undecodable-pixels", f"thumbnail of series {skey[2]} from {sop}: {exc}")
            return
        except OSError as exc:
            raise TransientError(f"rendering {original}: {exc}") from exc
        write_atomic(out, (image,), fsync=self.settings.ingest.fsync)
        batch.thumbnails.append(((*skey, sop), str(out)))
        self.metrics.outputs.labels("thumbnail").inc()
        self.summary.thumbnails += 1

    def _dead(self, batch: _Batch, record: Record, error_class: str, reason: str) -> None:
        where = (record.topic, record.partition, record.offset)
        if where in batch.dead_offsets:
            return
        batch.dead_offsets.add(where)
        log.warning("%s dead-lettered (%s): %s", record.source, error_class, reason)
        self.metrics.failed.labels(error_class).inc()
        batch.dead.append(dead_letter_record(record, error_class, reason, node_id=self.settings.worker_node_id).as_raw())

    def _publish(self, publisher: Publisher, events: list[DicomImageMeta], dead: list[RawMessage]) -> None:
        """Republish the changed rows and dead-letter the rest; both acknowledged before returning."""
        timeout = self.settings.kafka.message_timeout_ms / 1000 + 5.0
        if events:
            items: list[RawMessage] = [(e.key().encode(), encode(e), [(ORIGIN_HEADER, ORIGIN)]) for e in events]
            result = publisher.send_raw(self.settings.topics.dicom_image, items, timeout_s=timeout)
            if not result.ok:
                raise TransientError(f"republishing {len(events)} instance events: {result.failures[0].reason}")
            self.metrics.republished.inc(len(events))
            self.summary.republished += len(events)
        if dead:
            result = publisher.send_raw(self.dlq_topic, dead, timeout_s=timeout)
            if not result.ok:
                raise TransientError(f"dead-lettering {len(dead)} events: {result.failures[0].reason}")
            self.metrics.dead_lettered.inc(len(dead))
            self.summary.dead_lettered += len(dead)


def _next_offsets(records: list[Record]) -> dict[TP, int]:
    out: dict[TP, int] = {}
    for r in records:
        out[r.tp] = max(out.get(r.tp, 0), r.offset + 1)
    return out


__all__ = ["ORIGIN", "ORIGIN_HEADER", "ImageWorker", "Summary", "served_copy_path",
           "thumbnail_path"]
