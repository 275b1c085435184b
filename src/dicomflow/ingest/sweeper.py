"""Deleting the S3 backend's marker objects in batches (:mod:`~dicomflow.ingest.placement_s3`)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Literal

from dicomflow.blobs.base import BlobStore
from dicomflow.blobs.errors import BlobError

log = logging.getLogger(__name__)

#: Marker deletes are gathered this long into one DeleteObjects request (at most _SWEEP_MAX keys).
_SWEEP_S = 0.02
_SWEEP_MAX = 1000


class Sweeper:
    """Deletes the markers of acknowledged instances in batches, off the answers' path (observer).

    One DeleteObjects request per :data:`_SWEEP_S` instead of one DELETE per
    instance: under load, the requests a new instance costs S3 fall from three
    to about two. The same instance stored again meanwhile asks
    :meth:`take_back` whether the marker it found is one of these (then it is
    not an earlier copy's unacknowledged mark). A marker whose delete is lost
    (the process killed first), or still queued in another process, only
    makes an identical retry publish again: harmless, the consumer upserts.
    """

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._keys: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        #: Queued and not yet sent (take_back cancels them); being deleted now (take_back waits for them).
        self._pending: set[str] = set()
        self._inflight: set[str] = set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()

    def add(self, key: str) -> None:
        """Delete ``key`` soon."""
        with self._lock:
            self._pending.add(key)
            if self._thread is None:  # started on first use
                self._thread = threading.Thread(target=self._run, name="dicomflow-s3-sweep", daemon=True)
                self._thread.start()
        self._keys.put(key)

    def take_back(self, key: str) -> Literal["cancelled", "deleted", "unknown"]:
        """Whether ``key`` was an acknowledged marker: its delete ``cancelled`` (it stays), or ``deleted`` now."""
        with self._lock:
            if key in self._pending:
                self._pending.discard(key)
                return "cancelled"
            if key not in self._inflight:
                return "unknown"
            while key in self._inflight:
                self._lock.wait()
            return "deleted"

    def close(self) -> None:
        """Delete what is queued, then stop."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._keys.put(None)
            thread.join()

    def _run(self) -> None:
        stop = False
        while not stop and (first := self._keys.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + _SWEEP_S
            while len(batch) < _SWEEP_MAX:
                try:
                    key = self._keys.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if key is None:
                    stop = True
                    break
                batch.append(key)
            with self._lock:  # what take_back cancelled meanwhile stays
                batch = [k for k in dict.fromkeys(batch) if k in self._pending]
                self._pending.difference_update(batch)
                self._inflight.update(batch)
            try:
                if batch:
                    self.store.delete_many(batch)
            except BlobError as exc:
                log.warning("could not delete %d marker(s) (%s ...): %s", len(batch), batch[0], exc)
            finally:
                with self._lock:
                    self._inflight.difference_update(batch)
                    self._lock.notify_all()


__all__ = ["Sweeper"]
