"""What the image workers make of a batch: served copies, series thumbnails, their rows, dead letters.

:meth:`Outputs.produce` is one attempt at a batch on one PostgreSQL
connection: it reads each instance's receipt, reads the original and writes
the outputs through the storage layer (:mod:`dicomflow.blobs`, either
backend: a durable atomic write, ``store.put``), records their locations
(``store.location(key)``: a path, or ``s3://bucket/key``) in one transaction
and says which events are dead letters. An output's key derives from the
original's key as its path did from the original's path:
``{series}/.served/{sop}.{ts}.dcm`` and ``{series}/.served/thumbnail.jpg``.
The storage layer's errors: a missing original (``BlobNotFound``) is a dead
letter ``file-missing``, a location outside the store (``BlobLocationError``)
``outside-storage-root``; an unavailable store (``BlobUnavailable``) is
transient, raised for the worker to pause and retry the batch. It counts nothing: the same attempt may run
again (a reconnect, a retry), so the worker counts a batch once it is
committed (:mod:`dicomflow.images.worker`).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import psycopg

from dicomflow.blobs import BlobLocationError, BlobNotFound, open_store
from dicomflow.blobs.ranged import open_object
from dicomflow.errors import DicomflowError, WireFormatError, is_poison
from dicomflow.imaging.render import RenderError, RenderOptions, render
from dicomflow.imaging.transcode import WRITABLE, TranscodeError, transcode
from dicomflow.kafka.dlq import Poison
from dicomflow.kafka.records import Record
from dicomflow.models import DicomImageMeta, decode, now
from dicomflow.settings import Settings
from dicomflow.store.images import InstanceKey, SeriesKey, Transcoded, instance_files, record_outputs, series_order

log = logging.getLogger(__name__)

ORIGIN_HEADER = "dicomflow.origin"
ORIGIN = b"images"
SERVED = ".served"
THUMBNAIL = "thumbnail.jpg"

class TransientError(DicomflowError):
    """The disk failed: the batch is retried, nothing committed."""


@dataclass
class BatchOutputs:
    """What one attempt at a batch produced (counted by the worker only once the batch is committed)."""

    transcoded: list[Transcoded] = field(default_factory=list)
    thumbnails: list[tuple[InstanceKey, str]] = field(default_factory=list)
    dead: list[Poison] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    republished: int = 0


def served_copy_key(original: str, sop_uid: str, target_ts: str) -> str:
    return str(PurePosixPath(original).parent / SERVED / f"{sop_uid}.{target_ts}.dcm")


def thumbnail_key(original: str) -> str:
    return str(PurePosixPath(original).parent / SERVED / THUMBNAIL)


class Outputs:
    """Makes one batch's outputs in the store ``settings.storage`` names."""

    def __init__(self, settings: Settings) -> None:
        self.store = open_store(settings.storage, fsync=settings.ingest.fsync)
        self.thumbnail_size = settings.images.thumbnail_size

    def produce(self, records: list[Record], conn: psycopg.Connection[Any]) -> tuple[BatchOutputs, list[DicomImageMeta]]:
        """Outputs of ``records`` written, their rows in one transaction; returns them and the changed rows.

        Raises:
            TransientError: reading or writing a file failed.
            psycopg.Error: PostgreSQL failed (the store's connection classifies it).
        """
        batch = BatchOutputs()  # afresh: the store may run this again on a new connection
        series: dict[SeriesKey, Record] = {}
        for record in records:
            if dict(record.headers).get(ORIGIN_HEADER) == ORIGIN:
                batch.skipped["own-republish"] += 1
                continue
            try:
                event = decode(record.value or b"", DicomImageMeta)
                key: InstanceKey = (event.tenant_id, event.study_uid, event.series_uid, event.sop_uid)
                if event.image_status == "DELETED":  # dicomflow purge's: nothing to transcode, the thumbnail redone
                    batch.skipped["deleted"] += 1
                else:
                    self._transcode(batch, record, key, conn)
            except DicomflowError as exc:
                if not is_poison(exc):
                    raise
                self._dead(batch, record, _error_class(exc), str(exc))
                continue
            series.setdefault(key[:3], record)
        for skey, record in series.items():
            self._thumbnail(batch, record, skey, conn)
        changed = record_outputs(conn, batch.transcoded, batch.thumbnails, now())
        self._drop_orphans(batch, conn)
        return batch, changed

    def _drop_orphans(self, batch: BatchOutputs, conn: psycopg.Connection[Any]) -> None:
        """Remove again the outputs written for instances that a delete took out of the index meanwhile.

        A delete that commits between this batch's read of the index and its
        write may have been purged before the write: nothing else would remove
        that copy or thumbnail. A delete still in flight holds the rows, so the
        outputs' UPDATE waits for it and this check (a later statement) sees it.
        """
        written = [(t.key, t.location) for t in batch.transcoded if t.location] + list(batch.thumbnails)
        gone = [location for key, location in written if instance_files(conn, key) is None]
        if gone:
            self.store.delete_many([self.store.key_of(location) for location in gone])
            batch.skipped["deleted-meanwhile"] += len(gone)

    def _original(self, file_path: str) -> str | None:
        """The original's key, None when its location is outside the store."""
        try:
            return self.store.key_of(file_path)
        except BlobLocationError:
            return None

    def _transcode(self, batch: BatchOutputs, record: Record, key: InstanceKey, conn: psycopg.Connection[Any]) -> None:
        files = instance_files(conn, key)
        if files is None:
            self._dead(batch, record, "not-indexed", f"instance {key[3]} of tenant {key[0]} is not in dicom_image_meta")
            return
        if files.transfer_status not in ("NeedTransfer", "Success") or files.target_ts == files.transfer_syntax_uid:
            return
        original = self._original(files.file_path)
        if original is None:
            self._dead(batch, record, "outside-storage-root", f"{files.file_path} is outside the store")
            return
        out = served_copy_key(original, key[3], files.target_ts)
        where = self.store.location(out)
        if files.transfer_status == "Success" and files.pixel_data_location == where and self.store.exists(out):
            batch.skipped["done"] += 1
            return
        if files.target_ts not in WRITABLE:
            reason = f"target transfer syntax {files.target_ts} is not one this archive writes"
        else:
            try:
                data = transcode(self.store.read(original), files.target_ts)
            except BlobNotFound:
                self._dead(batch, record, "file-missing", f"{files.file_path} is missing")
                return
            except TranscodeError as exc:
                reason = f"cannot transcode {files.transfer_syntax_uid} to {files.target_ts}: {exc}"
            else:
                self.store.put(out, data)  # BlobUnavailable: transient, the batch is retried
                batch.transcoded.append(Transcoded(key, files.trace_id, where))
                return
        batch.transcoded.append(Transcoded(key, files.trace_id, None, reason))
        self._dead(batch, record, "undecodable-pixels", reason)

    def _thumbnail(self, batch: BatchOutputs, record: Record, skey: SeriesKey, conn: psycopg.Connection[Any]) -> None:
        order = series_order(conn, skey)
        if not order:
            return
        sop, location = order[len(order) // 2]
        files = instance_files(conn, (*skey, sop))
        original = self._original(files.file_path) if files else None
        if original is None:
            return  # the instance's own event reports it
        out = thumbnail_key(original)
        where = self.store.location(out)
        holders = [s for s, loc in order if loc]
        if location == where and holders == [sop] and self.store.exists(out):
            batch.skipped["done"] += 1
            return
        size = self.thumbnail_size
        try:
            with open_object(self.store, original) as source:
                image = render(source, RenderOptions(viewport=(size, size)))
        except BlobNotFound:
            return  # the instance's own event reports it
        except RenderError as exc:
            if "no image pixel data" in str(exc):
                batch.skipped["no-pixels"] += 1
                log.debug("series %s has no image pixel data: no thumbnail", skey[2])
                return
            self._dead(batch, record, "undecodable-pixels", f"thumbnail of series {skey[2]} from {sop}: {exc}")
            return
        except OSError as exc:
            raise TransientError(f"rendering {files.file_path if files else original}: {exc}") from exc
        self.store.put(out, image)
        batch.thumbnails.append(((*skey, sop), where))

    def _dead(self, batch: BatchOutputs, record: Record, error_class: str, reason: str) -> None:
        """``record`` goes to the dead-letter topic (once per batch, whatever else failed of it)."""
        if not any(p.record.source == record.source for p in batch.dead):
            batch.dead.append(Poison(record, error_class, reason))

def _error_class(exc: DicomflowError) -> str:
    """The DLQ error class of a poison error: its own when it has one."""
    own = getattr(exc, "error_class", None)
    if isinstance(own, str):
        return own
    return "wire-format" if isinstance(exc, WireFormatError) else type(exc).__name__


__all__ = ["ORIGIN", "ORIGIN_HEADER", "SERVED", "THUMBNAIL", "BatchOutputs", "Outputs", "TransientError",
           "served_copy_key", "thumbnail_key"]
