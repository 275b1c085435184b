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
thumbnail an instance carried (``thumbnail_location``).

A location the storage layer refuses (outside the root or bucket) is
logged and dropped from the queue: nothing dicomflow may delete. An
unavailable store raises :class:`~dicomflow.blobs.BlobUnavailable`; the
transaction rolls back and the worker retries.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import psycopg

from dicomflow.blobs import BlobLocationError, BlobStore
from dicomflow.store import outbox

log = logging.getLogger(__name__)


class Purger:
    """Removes the objects of due purge-queue rows."""

    def __init__(self, store: BlobStore, root: str, *, batch: int) -> None:
        self.store = store
        self.root = root
        self.batch = batch

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
            outbox.forget_purges(conn, [i.sequence for i in items])
        log.info("purged %d objects of %d deleted instances", len(keys), len(items))
        return len(items)


__all__ = ["Purger"]
