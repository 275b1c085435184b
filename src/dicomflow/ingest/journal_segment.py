"""The files of the receiver's journal (:mod:`~dicomflow.ingest.journal`): preallocated segments of store events.

A segment is a file ``{journal}/{time_ns}-{pid}-{seq}.journal`` of
:data:`SEGMENT_BYTES`, written full of zeros and synced *before* it gets its
name: appending a record then overwrites blocks that are allocated already,
so the ``fdatasync`` that makes the record durable writes the record and
nothing else (no size or extent change for the file system's own journal
to commit).

A record is ``length`` (4 bytes, little-endian, > 0), ``crc32`` of the
payload (4 bytes), then the payload: the store event's wire JSON. A reader
stops at the first zero length (the unwritten rest), at a record that runs
past the end, or at a wrong checksum (a record torn by a crash: it was
never synced, so nobody was told Success for it).

Ownership is an exclusive ``flock`` on the open segment, taken before the
name appears and released by the kernel when the process dies, however it
dies: a segment whose lock can be taken belongs to no live receiver and is
an *orphan*, replayed by whichever receiver process locks it first.

What can go wrong: every OS error is raised as :class:`OSError` to the
journal, which turns it into a failure status.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.ingest.storage import fsync_folder

log = logging.getLogger(__name__)

#: Size of one segment file (about 2,500 store events of ~1.5 kB).
SEGMENT_BYTES = 4 * 1024 * 1024
SUFFIX = ".journal"
_HEADER = struct.Struct("<II")
_ZEROS = bytes(1024 * 1024)
_sync_data = getattr(os, "fdatasync", os.fsync)
_libc = ctypes.CDLL(None, use_errno=True)
#: syncfs(2) (Linux): every dirty page and inode of one file system written, its journal committed, the device flushed.
HAVE_SYNCFS = hasattr(_libc, "syncfs")


def syncfs(fd: int) -> None:
    """Make everything written to the file system holding ``fd`` durable (errors reported since Linux 5.8).

    Raises:
        OSError: the kernel reported a write-back error.
    """
    if _libc.syncfs(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def encode_record(payload: bytes) -> bytes:
    """One record: length, checksum, payload."""
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes) -> list[bytes]:
    """The payloads of the intact records at the start of ``data`` (see the module documentation)."""
    payloads: list[bytes] = []
    offset, end = 0, len(data)
    while offset + _HEADER.size <= end:
        length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        if length == 0 or start + length > end:
            break
        payload = data[start:start + length]
        if zlib.crc32(payload) != crc:
            log.warning("journal: a torn record at byte %d (never acknowledged); the rest is ignored", offset)
            break
        payloads.append(payload)
        offset = start + length
    return payloads


@dataclass(eq=False)
class Segment:
    """One segment file held open and locked by this process.

    ``outstanding``: records written and not yet acknowledged by Kafka; a
    sealed segment (no more appends) with none is removed. ``failed``: a
    write or sync failed; the segment is kept for the next start's replay.
    """

    path: Path
    fd: int
    offset: int = 0
    outstanding: int = 0
    sealed: bool = False
    failed: bool = False
    removed: bool = field(default=False, repr=False)

    def fits(self, record: bytes) -> bool:
        """True when ``record`` still fits, with room for the zero length that ends the records."""
        return self.offset + len(record) + _HEADER.size <= SEGMENT_BYTES

    def append(self, records: bytes) -> None:
        """Write ``records`` after the last one (not synced).

        Raises:
            OSError: the write failed (the segment is marked failed).
        """
        view = memoryview(records)
        try:
            while view:
                written = os.pwrite(self.fd, view, self.offset)
                view = view[written:]
                self.offset += written
        except OSError:
            self.failed = True
            raise

    def sync(self, *, whole_file_system: bool = False) -> None:
        """fdatasync the segment (the records written so far are durable after it); or syncfs its file system.

        Raises:
            OSError: the sync failed (the segment is marked failed).
        """
        try:
            if whole_file_system:
                syncfs(self.fd)
            else:
                _sync_data(self.fd)
        except OSError:
            self.failed = True
            raise

    def remove(self) -> None:
        """Unlink and close (every record acknowledged); an observer: a failure is logged."""
        if self.removed:
            return
        self.removed = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("journal: could not remove %s: %s", self.path, exc.strerror)
        self.close()

    def close(self) -> None:
        """Close the file, which releases the lock (the segment becomes an orphan if it is still there)."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


def create_segment(folder: Path, name: str, *, fsync: bool) -> Segment:
    """A new, zero-filled, locked segment named ``name`` in ``folder``.

    Raises:
        OSError: it could not be created (the partial file is removed).
    """
    temp = folder / f".{name}.tmp"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for offset in range(0, SEGMENT_BYTES, len(_ZEROS)):
            os.pwrite(fd, _ZEROS[:min(len(_ZEROS), SEGMENT_BYTES - offset)], offset)
        if fsync:
            os.fsync(fd)
        path = folder / name
        os.rename(temp, path)
        if fsync:
            fsync_folder(folder)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    return Segment(path, fd)


def claim_orphan(path: Path) -> tuple[Segment, list[bytes]] | None:
    """Lock ``path`` if no live process holds it; then the segment (sealed) and its records' payloads.

    None: another process owns it, or it is gone (replayed by another process meanwhile).

    Raises:
        OSError: it could not be read.
    """
    try:
        fd = os.open(path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # still the same file under that name (not replayed and removed since we opened it)
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                os.close(fd)
                return None
        except FileNotFoundError:
            os.close(fd)
            return None
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
    except BaseException:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        raise
    return Segment(path, fd, offset=size, sealed=True), decode_records(data)


def segment_paths(folder: Path) -> list[Path]:
    """The segment files in ``folder``, oldest name first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def clear_temporaries(folder: Path) -> None:
    """Remove half-made segments (``.*.tmp``) no live process is making (observer)."""
    if not folder.is_dir():
        return
    for leftover in folder.glob(".*.tmp"):
        try:
            fd = os.open(leftover, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            os.unlink(leftover)
        except OSError as exc:
            log.warning("journal: could not remove %s: %s", leftover, exc.strerror)
        finally:
            os.close(fd)


__all__ = ["HAVE_SYNCFS", "SEGMENT_BYTES", "SUFFIX", "Segment", "claim_orphan", "clear_temporaries", "create_segment",
           "decode_records", "encode_record", "segment_paths", "syncfs"]
