"""Placing a new instance on the ``s3`` backend: :func:`~dicomflow.ingest.duplicates.place` for a bucket.

The rule is the filesystem's (:mod:`~dicomflow.ingest.duplicates`), the
means are S3's:

- **a conditional PUT** (``If-None-Match: *``, :meth:`BlobStore.create
  <dicomflow.blobs.base.BlobStore.create>`) takes the place of the hard
  link: S3 writes the object only if its key is free, and of two senders of
  one instance at once exactly one is told it created it. A new instance
  costs one request (no HEAD first, which would also leave a window between
  the look and the write);
- **a zero-byte marker object** ``<folder>/.<name>.unacknowledged`` takes the
  place of the hidden mark file. It is created (conditionally, so we learn
  whether an earlier copy left one) *before* the object, and deleted once
  Kafka acknowledged the store event. A receiver killed between the PUT and
  the acknowledgement leaves the marker, so the sender's identical retry is
  published again instead of being answered Success with no event: the
  filesystem's ``.unacknowledged`` rule, unchanged. The marker's PUT starts
  in a background thread as soon as the instance's identity is known (the
  receivers know it from the data set's first bytes), so it overlaps
  receiving the rest; the object's PUT waits for it.

The key exists already: the marker we created is deleted, the stored object
is read and compared (same rule as :func:`~dicomflow.ingest.duplicates.same_data_set`:
same transfer syntax, same bytes after the File Meta Information), then
``identical`` (published again only if a marker was there before us),
``reject`` (:class:`~dicomflow.ingest.duplicates.DuplicateInstanceError`,
0x0111), ``keep``, or ``replace``: the stored object is copied (server side)
to a hidden ``.<name>.<random>.replaced`` key, the new one written over it;
:meth:`S3Placement.acknowledged` deletes the backup, :meth:`S3Placement.not_acknowledged`
copies it back.

**The spool.** A data set that arrives in pieces (a C-STORE in several
P-DATA fragments) is received into a local file under ``storage.spool``
(:class:`SpoolFile`; no fsync: S3's acknowledgement is the durability) and
uploaded from it, in parts above ``storage.s3.multipart_chunk_bytes``, so
memory per association stays bounded; a data set already in memory (one
fragment, a STOW-RS part) goes up from memory. The spool file is deleted as
soon as the PUT succeeded or failed: the spool holds nothing for an
acknowledged instance. ``dicomflow publish`` uploads a Part 10 file from
where it is (:class:`Upload`), spooling only a data set that needs a header.

Errors: any :class:`~dicomflow.blobs.errors.BlobError` (S3 down, refused
credentials) becomes a :class:`~dicomflow.ingest.exceptions.StorageWriteError`
(0xA700, out of resources: the sender retries), never Success.
"""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.blobs.base import BlobStore
from dicomflow.blobs.errors import BlobError
from dicomflow.ingest.duplicates import DUPLICATES, PUBLISHED, DuplicateInstanceError, Outcome, Policy, data_set_start
from dicomflow.ingest.exceptions import StorageWriteError
from dicomflow.ingest.storage import PendingFile
from dicomflow.ingest.sweeper import Sweeper

log = logging.getLogger(__name__)

#: Spool subfolder of data sets being received (named like the receiver's spill folder, cleared the same way).
SPOOL_FOLDER = ".incoming"
#: Background requests at once (markers, deletes): each waits on the network, not the CPU.
_THREADS = 8
_CHUNK = 1 << 20
_HEAD = 64 * 1024


def marker_key(key: str) -> str:
    """The hidden marker object of ``key`` whose store event was not acknowledged."""
    folder, _, name = key.rpartition("/")
    return f"{folder}/.{name}.unacknowledged" if folder else f".{name}.unacknowledged"


class Marker:
    """The marker of one instance being stored: its conditional PUT, started early, and who owns it."""

    def __init__(self, writer: S3Writer, key: str) -> None:
        self.writer = writer
        self.key = key
        self.marker = marker_key(key)
        self._created: Future[bool] = writer.pool.submit(writer.store.create, self.marker, b"")
        #: Handed over to a placement: releasing it is no longer this object's business.
        self._placed = False

    def claim(self) -> bool:
        """Wait for the marker's PUT: True when we created it, False when an earlier copy left it.

        Raises:
            BlobError: the PUT failed (S3 unavailable).
        """
        self._placed = True
        return self._created.result()

    def release(self) -> None:
        """The instance was dropped before it was placed: delete the marker if it is ours (in the background)."""
        if self._placed:
            return
        self._placed = True

        def drop(done: Future[bool]) -> None:
            if not done.cancelled() and done.exception() is None and done.result():
                self.writer.sweeper.add(self.marker)

        self._created.add_done_callback(drop)


class SpoolFile(PendingFile):
    """A data set received into the spool (no fsync), for its instance's ``key``; the marker is already on its way."""

    def __init__(self, writer: S3Writer, key: str) -> None:
        name = f"spill-{os.getpid()}-{uuid.uuid4().hex[:12]}.dcm"  # the pid: a restart clears a dead process's files
        super().__init__(writer.spool / SPOOL_FOLDER / name, fsync=False)
        self.key = key
        self.marker = Marker(writer, key)

    def discard(self) -> None:
        """Remove the spool file; a marker not yet handed to a placement is released."""
        super().discard()
        self.marker.release()


@dataclass
class Upload:
    """A whole instance for ``key`` that needs no spool file: bytes in memory, or a complete local file (not ours)."""

    key: str
    #: The Part 10 bytes (preamble and meta included), or a file holding them (``publish``'s source file).
    source: Path | bytes
    marker: Marker
    size: int

    def seal(self) -> int:
        return self.size

    def discard(self) -> None:
        """Release a marker not yet handed to a placement (a source file is never removed)."""
        self.marker.release()


@dataclass
class S3Placement:
    """Where :meth:`S3Writer.place` left an instance (the filesystem's :class:`~dicomflow.ingest.duplicates.Placement`)."""

    outcome: Outcome
    key: str
    #: What the store event names: ``s3://bucket/<prefix><key>``.
    location: str
    size: int
    previous_size: int | None = None
    _writer: S3Writer | None = field(default=None, repr=False)
    _backup: str | None = field(default=None, repr=False)

    @property
    def publish(self) -> bool:
        """True when a store event must go out (a new object under the key)."""
        return self.outcome in PUBLISHED

    @property
    def duplicate(self) -> bool:
        """True for a non-identical duplicate (audited)."""
        return self.outcome in DUPLICATES

    def acknowledged(self) -> None:
        """The store event is acknowledged: delete the backup and the marker, off the answer's path (observer)."""
        writer = self._writer
        if writer is None:
            return
        if self._backup is not None:
            writer.background(writer.store.delete, self._backup)
            self._backup = None
        writer.sweeper.add(marker_key(self.key))

    def not_acknowledged(self) -> None:
        """The store event was not acknowledged in time: leave (or create) the marker; a replaced object comes back."""
        writer = self._writer
        if writer is None:
            return
        try:
            if self.outcome == "replaced" and self._backup is not None:
                writer.store.copy(self._backup, self.key)
                writer.store.delete(self._backup)
                self._backup = None
            elif self.outcome == "new":
                writer.store.put(marker_key(self.key), b"")
        except BlobError as exc:
            log.error("could not undo storing %s after a failed publication: %s", self.location, exc)


class S3Writer:
    """Places instances in one :class:`~dicomflow.blobs.base.BlobStore` (S3) by ``ingest.duplicates``; thread-safe."""

    def __init__(self, store: BlobStore, spool: Path, policy: Policy) -> None:
        self.store = store
        self.spool = Path(os.path.abspath(spool))
        self.policy = policy
        self.pool = ThreadPoolExecutor(max_workers=_THREADS, thread_name_prefix="dicomflow-s3")
        self.sweeper = Sweeper(store)

    def close(self) -> None:
        """Wait for the background requests (markers, marker deletes) and stop their threads."""
        self.pool.shutdown(wait=True)
        self.sweeper.close()

    def background(self, fn: Callable[[str], None], key: str) -> None:
        """Run ``fn(key)`` off the caller's path; a failure is logged (observer)."""
        def logged(done: Future[None]) -> None:
            if (exc := done.exception()) is not None:
                log.warning("background request on %s failed: %s", key, exc)

        try:
            self.pool.submit(fn, key).add_done_callback(logged)
        except RuntimeError:  # shut down already: do it here
            try:
                fn(key)
            except BlobError as exc:
                log.warning("request on %s failed: %s", key, exc)

    def spool_file(self, key: str) -> SpoolFile:
        """A spool file for the instance ``key``, its marker's PUT started.

        Raises:
            StorageWriteError: the spool file cannot be created.
        """
        return SpoolFile(self, key)

    def upload(self, key: str, source: Path | bytes) -> Upload:
        """An instance held in memory or in a complete local file, for :meth:`place`; its marker's PUT started.

        Raises:
            StorageWriteError: the file cannot be read.
        """
        try:
            size = os.stat(source).st_size if isinstance(source, Path) else len(source)
        except OSError as exc:
            raise StorageWriteError(f"cannot read the file ({exc.strerror or exc}): {source!s}") from exc
        return Upload(key, source, Marker(self, key), size)

    def place(self, pending: SpoolFile | Upload, *, sop_uid: str | None = None) -> S3Placement:
        """Create the object of a sealed spool file or an upload, or decide the duplicate (module documentation).

        The spool file stays for the caller to discard (it is needed no more).

        Raises:
            DuplicateInstanceError: different content is stored and the policy is reject.
            StorageWriteError: S3 did not store it (unavailable, refused); nothing was published.
        """
        source = pending.temp if isinstance(pending, SpoolFile) else pending.source
        key, marker = pending.key, pending.marker
        marked = False
        try:
            marked = marker.claim() or self._acknowledged_marker(marker.marker)
            if self.store.create(key, source):
                return S3Placement("new", key, self.store.location(key), pending.size, _writer=self)
            if marked:  # an earlier copy is there: our marker must not make it look unacknowledged
                self.store.delete(marker.marker)
            return self._duplicate(key, source, pending.size, earlier_marker=not marked, sop_uid=sop_uid)
        except BlobError as exc:
            if marked:
                self.background(self.store.delete, marker.marker)
            raise StorageWriteError(f"object storage did not store the instance: {exc}", sop_uid=sop_uid) from exc

    def _acknowledged_marker(self, marker: str) -> bool:
        """The marker found was one this process is deleting (its event acknowledged a moment ago): make it ours.

        So an identical retry right after an acknowledgement is identical, as
        on the filesystem, rather than published again. True when we now own
        a marker (taken back, or created again once the delete went through).
        """
        state = self.sweeper.take_back(marker)
        if state == "cancelled":
            return True
        return state == "deleted" and self.store.create(marker, b"")

    def _duplicate(self, key: str, source: Path | bytes, size: int, *, earlier_marker: bool,
                   sop_uid: str | None) -> S3Placement:
        location = self.store.location(key)
        previous = self.store.head(key).size
        if same_stored(self.store, key, source, stored_size=previous):
            if earlier_marker:  # the first copy's event was never acknowledged: publish again
                return S3Placement("new", key, location, previous, _writer=self)
            return S3Placement("identical", key, location, previous, previous)
        if self.policy == "reject":
            raise DuplicateInstanceError("SOP Instance UID already stored with other content (ingest.duplicates)",
                                         sop_uid=sop_uid)
        if self.policy == "keep":
            return S3Placement("kept", key, location, previous, previous)
        folder, _, name = key.rpartition("/")
        backup = f"{folder}/.{name}.{uuid.uuid4().hex[:12]}.replaced"
        self.store.copy(key, backup)
        try:
            if isinstance(source, Path):
                self.store.put_file(key, source)
            else:
                self.store.put(key, source)
        except BlobError:
            self.background(self.store.delete, backup)
            raise
        return S3Placement("replaced", key, location, size, previous, _writer=self, _backup=backup)


def same_stored(store: BlobStore, key: str, source: Path | bytes, *, stored_size: int | None = None) -> bool:
    """True when the stored object and ``source`` hold the same data set (same syntax, same bytes after the meta group).

    The object is streamed (one GET) and compared chunk by chunk: memory stays bounded.

    Raises:
        BlobError: the object cannot be read.
    """
    with open(source, "rb") if isinstance(source, Path) else io.BytesIO(source) as local:
        local_start, local_syntax = data_set_start(local)
        chunks = store.stream(key, chunk_size=_CHUNK)
        head = b""
        for chunk in chunks:
            head += chunk
            if len(head) >= _HEAD:
                break
        stored_start, stored_syntax = data_set_start(io.BytesIO(head))
        if stored_syntax != local_syntax:
            return False
        local_size = local.seek(0, io.SEEK_END)
        if stored_size is not None and stored_size - stored_start != local_size - local_start:
            return False
        local.seek(local_start)
        pending = memoryview(head)[stored_start:]
        while True:
            if pending and local.read(len(pending)) != pending:
                return False
            chunk = next(chunks, b"")
            if not chunk:
                return local.read(1) == b""
            pending = memoryview(chunk)


__all__ = [
    "SPOOL_FOLDER",
    "Marker",
    "S3Placement",
    "S3Writer",
    "SpoolFile",
    "Sweeper",
    "Upload",
    "marker_key",
    "same_stored",
]
