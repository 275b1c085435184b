"""Atomic, durable file writes under the storage root.

C-STORE Success promises the sender it may delete its copy, so the file must
survive a crash the moment we answer. The recipe:

1. write to a temporary file in the target folder (same file system, so the
   rename below is atomic), named ``.{name}.{random}.tmp``;
2. ``rename`` it over the final name: readers see the old file or the new
   one, never half a file, and a re-sent instance replaces the old copy;
3. ``fsync`` the file (through the descriptor still open).

Why one fsync after the rename, not fdatasync before it plus an fsync of the
folder after it: on the journaling file systems Linux archives run on
(ext4, XFS, btrfs) a rename changes the inode (its ctime), so fsync of the
file commits the journal transaction holding the rename, the new folders
and, first (ordered mode), the data. Data and name become durable with one
journal commit instead of two, which halves the time a C-STORE waits for the
disk; on a busy disk that is several milliseconds per instance.

The price is a narrower guarantee for a crash *before* the answer: the final
name may then hold a file whose data did not reach the disk. Nothing was
acknowledged and no store event was published for it, so the sender sends
it again and the new copy replaces it. (Replacing an existing file, ext4
flushes the new data before committing the rename.) Once the answer is
Success, the file is complete and durable.

With ``fsync=False`` step 3 is skipped (faster; a power cut may lose files
already acknowledged). A crash before step 2 leaves a hidden ``.tmp`` file
behind; nothing ever points at it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from dicomflow.receiver.exceptions import StorageWriteError
from dicomflow.receiver.part10 import Buffer

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: fsync, not fdatasync: the rename only changes metadata (ctime), which fdatasync may skip.
_sync = os.fsync


def write_atomic(path: Path, chunks: Sequence[Buffer], *, fsync: bool = True) -> int:
    """Write ``chunks`` (concatenated) to ``path`` atomically; return the size written.

    Missing parent folders are created. An existing file at ``path`` is
    replaced atomically.

    Raises:
        StorageWriteError: any OS error (disk full, permission denied, I/O
            error, a file where a folder should be). When it happens before
            the rename, the temporary file is removed and ``path`` is left as
            it was; when the final fsync fails, ``path`` holds the complete
            new file but it may not be on disk.
    """
    folder = path.parent
    temp = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        try:
            fd = os.open(temp, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:
            make_folders(folder)
            fd = os.open(temp, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        raise StorageWriteError(f"cannot create a file in {folder}: {exc.strerror or exc}") from exc
    renamed = False
    try:
        size = _write_all(fd, chunks)
        os.replace(temp, path)
        renamed = True
        if fsync:
            _sync(fd)
    except OSError as exc:
        if not renamed:
            _remove_quietly(temp)
        raise StorageWriteError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        if not renamed:
            _remove_quietly(temp)
        raise
    finally:
        os.close(fd)
    return size


def _write_all(fd: int, chunks: Sequence[Buffer]) -> int:
    """Write every byte of every chunk (``os.write`` may write less than asked)."""
    total = 0
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            written = os.write(fd, view)
            view = view[written:]
            total += written
    return total


def make_folders(folder: Path) -> None:
    """Create ``folder`` and its missing parents.

    Safe against a concurrent creator (another association storing into the
    same new series at the same moment). Their durability comes with the
    fsync of the first file written in them (see the module documentation).

    Raises:
        OSError: a folder cannot be created (permission, a file in the way).
    """
    try:
        os.makedirs(folder, 0o755, exist_ok=True)
    except FileExistsError:  # a file, not a folder, is in the way
        raise NotADirectoryError(20, "Not a directory", str(folder)) from None


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # observer: the write already failed and is reported
        log.warning("could not remove temporary file %s: %s", path, exc.strerror)


__all__ = ["make_folders", "write_atomic"]
