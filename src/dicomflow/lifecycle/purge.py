"""The purge: objects of deleted instances removed through the storage layer, then their queue rows.

One round, one transaction: lock up to ``lifecycle.purge_batch`` due rows of
``dicom_purge_queue`` (``SKIP LOCKED``: several purge workers share the
queue), delete every object they name with one
:meth:`~dicomflow.blobs.BlobStore.delete_many` (one DeleteObjects request
per 1,000 keys on S3; missing objects are no error, so a second run after a
crash is harmless), then delete the rows and commit. A kill anywhere leaves
the rows (and at most some objects already gone): the next round ends in
the same state. The rows name every object the deleted index rows pointed
at: each receipt's file, the image workers' served copy
(``pixel_data_location``, ``images.outputs.served_copy_key``) and the series
thumbnail an instance carried (``thumbnail_location``). In the same round
the deleted instances are republished on ``dicom_image_queue`` with
``image_status = "DELETED"`` and their series' states on
``dicom_state_queue`` with the new count (the wire formats unchanged), so the
warehouse marks them; the image workers skip DELETED events but redo the
series thumbnail.

A location the storage layer refuses (outside the root or bucket) is
logged and dropped from the queue: nothing dicomflow may delete. An
unavailable store raises :class:`~dicomflow.blobs.BlobUnavailable`; the
transaction rolls back and the worker retries.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec
import psycopg

from dicomflow.blobs import BlobLocationError, BlobStore
from dicomflow.kafka.producer import Publisher
from dicomflow.lifecycle.exceptions import LifecycleError
from dicomflow.models import DicomImageMeta, DicomStateMeta, decode, now
from dicomflow.store import outbox

log = logging.getLogger(__name__)


class Purger:
    """Removes the objects of due purge-queue rows."""

    def __init__(self, store: BlobStore, root: str, producer: Publisher, *, batch: int,
                 timeout_s: float = 30.0) -> None:
        self.store = store
        self.root = root
        self.producer = producer
        self.batch = batch
        self.timeout_s = timeout_s

    def _key(self, location: str) -> str | None:
        where = location if self.store.backend == "s3" or os.path.isabs(location) else os.path.join(self.root, location)
        try:
            return self.store.key_of(where)
        except BlobLocationError as exc:
            log.error("not purging %s: outside the store (%s)", location, exc.problem)
            return None

    def round(self, conn: psycopg.Connection[Any]) -> int:
        """Purge the next due rows; returns how many instances (0: nothing due).

        Raises:
            BlobUnavailable: the store failed (rolled back; retried by the worker).
            psycopg.Error: PostgreSQL failed (rolled back, the same).
        """
        with conn.transaction():
            items = outbox.due_purges(conn, self.batch)
            if not items:
                return 0
            keys = sorted({k for item in items for loc in item.locations if (k := self._key(loc)) is not None})
            self.store.delete_many(keys)
            self._mark_deleted(conn, items)
            outbox.forget_purges(conn, [i.sequence for i in items])
        log.info("purged %d objects of %d deleted instances", len(keys), len(items))
        return len(items)

    def _mark_deleted(self, conn: psycopg.Connection[Any], items: list[outbox.PurgeItem]) -> None:
        """Republish the deleted instances with image_status DELETED, and their series' states, acknowledged.

        The warehouse keeps the latest version per key (updated_time), so the
        instance rows become DELETED there and the series take their new count
        (0 for an emptied series, whose last state row the delete kept).

        Raises:
            LifecycleError: Kafka did not acknowledge them (rolled back; retried).
        """
        when = now()
        images = [msgspec.structs.replace(decode(i.image, DicomImageMeta), image_status="DELETED", updated_time=when)
                  for i in items if i.image is not None]
        emptied = [msgspec.structs.replace(decode(i.series_state, DicomStateMeta), updated_time=when)
                   for i in items if i.series_state is not None]
        gone = {(s.tenant_id, s.study_uid, s.series_uid) for s in emptied}
        touched = sorted({(i.tenant_id, i.study_uid, i.series_uid) for i in items} - gone)
        states = [msgspec.structs.replace(s, updated_time=when) for s in outbox.states_of(conn, touched)] + emptied
        for what, result in (("instance", self.producer.send_images(images, timeout_s=self.timeout_s)),
                             ("state", self.producer.send_states(states, timeout_s=self.timeout_s))):
            if not result.ok:
                raise LifecycleError(f"{len(result.failures)} DELETED {what} events were not acknowledged: "
                                     f"{result.failures[0]}")


__all__ = ["Purger"]
