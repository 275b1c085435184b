"""Atomic, durable file writes under the storage root.

C-STORE Success promises the sender it may delete its copy, so the file must
survive a crash the moment we answer. The recipe:

1. write to a temporary file in the target folder (same file system, so the
   rename below is atomic), named ``.{name}.{random}.tmp``;
2. ``fdatasync`` it (data and size on disk);
3. ``rename`` it over the final name: readers see the old file or the new
   one, never half a file (not even after a crash). (The ways in do not
   rename a new instance over a stored one: they :meth:`PendingFile.seal` it
   and let :func:`~dicomflow.ingest.duplicates.place` decide by
   ``ingest.duplicates``, which refuses a different copy by default.)
4. ``fsync`` the folder, so the new name itself is on disk. Folders created
   on the way are made durable the same way (their parent is synced).

Step 4 may be left to the caller (``sync_folder=False``): the receiver runs
it while Kafka acknowledges the store event, because both must be done
before Success and neither needs the other. The file's data is already on
disk and its name visible when the event goes out; a crash before the
folder sync completes can only lose the *name* of an instance that was not
acknowledged (its sender sends it again).

With ``fsync=False`` steps 2 and 4 are skipped (faster; a power cut may lose
files already acknowledged). A crash between 1 and 3 leaves a hidden
``.tmp`` file behind; nothing ever points at it.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from dicomflow.dicom.part10 import Buffer
from dicomflow.ingest.exceptions import StorageWriteError

log = logging.getLogger(__name__)

_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_sync_data = getattr(os, "fdatasync", os.fsync)


def write_atomic(path: Path, chunks: Sequence[Buffer], *, fsync: bool = True, sync_folder: bool = True) -> int:
    """Write ``chunks`` (concatenated) to ``path`` atomically; return the size written.

    Missing parent folders are created. An existing file at ``path`` is
    replaced atomically (for outputs such as thumbnails; instances go
    through :func:`~dicomflow.ingest.duplicates.place`). With ``sync_folder=False`` (and ``fsync``) the
    caller must call :func:`sync_folder` on ``path.parent`` before it
    promises durability.

    Raises:
        StorageWriteError: any OS error (disk full, permission denied, I/O
            error, a file where a folder should be). Before the rename, the
            temporary file is removed and ``path`` is left as it was; if
            only the folder sync fails, ``path`` holds the complete new file
            but its name may not be on disk.
    """
    folder = path.parent
    temp = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        try:
            fd = os.open(temp, _OPEN_FLAGS, 0o644)
        except FileNotFoundError:
            make_folders(folder, fsync=fsync)
            fd = os.open(temp, _OPEN_FLAGS, 0o644)
    except OSError as exc:
        raise StorageWriteError(f"cannot create the file ({exc.strerror or exc}) in {folder}") from exc
    try:
        try:
            size = _write_all(fd, chunks)
            if fsync:
                _sync_data(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError as exc:
        _remove_quietly(temp)
        raise StorageWriteError(f"cannot write the file ({exc.strerror or exc}): {path}") from exc
    except BaseException:
        _remove_quietly(temp)
        raise
    if fsync and sync_folder:
        sync_folder_durably(folder)
    return size


class PendingFile:
    """A file being written as its bytes arrive: the streaming form of :func:`write_atomic`.

    The temporary file (``.{name}.{random}.tmp`` beside ``path``, so the
    rename is atomic) takes each chunk as it comes; :meth:`seal` syncs and
    closes it, for :func:`~dicomflow.ingest.duplicates.place` to put in
    place; :meth:`commit` is :meth:`seal` and a rename over ``path``;
    :meth:`discard` (or any error) removes it. No partial file is ever
    visible under the final name.

    Raises:
        StorageWriteError: (constructor, :meth:`write`, :meth:`commit`) any OS
            error; the temporary file is removed before it is raised.
    """

    def __init__(self, path: Path, *, fsync: bool = True) -> None:
        self.path = path
        self.fsync = fsync
        self.size = 0
        #: Synced and closed, not yet renamed: :meth:`discard` still removes the temporary file.
        self._sealed = False
        folder = path.parent
        self.temp = folder / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            try:
                self._fd: int | None = os.open(self.temp, _OPEN_FLAGS, 0o644)
            except FileNotFoundError:
                make_folders(folder, fsync=fsync)
                self._fd = os.open(self.temp, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise StorageWriteError(f"cannot create the file ({exc.strerror or exc}) in {folder}") from exc

    def fileno(self) -> int:
        """The temporary file's descriptor (for a kernel copy into it).

        Raises:
            StorageWriteError: the file was committed or discarded already.
        """
        if self._fd is None:
            raise StorageWriteError(f"the file was already closed: {self.path}")
        return self._fd

    def write(self, chunk: Buffer) -> None:
        """Append ``chunk``."""
        if self._fd is None:
            raise StorageWriteError(f"the file was already closed: {self.path}")
        try:
            self.size += _write_all(self._fd, (chunk,))
        except OSError as exc:
            self.discard()
            raise StorageWriteError(f"cannot write the file ({exc.strerror or exc}): {self.path}") from exc

    def commit(self, *, sync_folder: bool = True) -> int:
        """:meth:`seal`, then rename over ``path`` (and sync the folder unless told not to); return the size.

        A file at ``path`` is replaced. Raises as :meth:`seal`; a failed
        rename removes the temporary file.
        """
        size = self.seal()
        try:
            os.replace(self.temp, self.path)
        except OSError as exc:
            _remove_quietly(self.temp)
            raise StorageWriteError(f"cannot write the file ({exc.strerror or exc}): {self.path}") from exc
        finally:
            self._sealed = False
        if self.fsync and sync_folder:
            sync_folder_durably(self.path.parent)
        return size

    def seal(self, *, sync: bool = True) -> int:
        """fdatasync and close the temporary file without renaming it; return the size.

        The caller puts it in place (:func:`~dicomflow.ingest.duplicates.place`)
        or calls :meth:`discard`. ``sync=False``: closed only, the caller has
        the data synced before it promises durability (the receiver's
        journal syncs the whole file system once for many instances).
        """
        fd, self._fd = self._fd, None
        if fd is None:
            raise StorageWriteError(f"the file was already closed: {self.path}")
        try:
            try:
                if self.fsync and sync:
                    _sync_data(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            _remove_quietly(self.temp)
            raise StorageWriteError(f"cannot write the file ({exc.strerror or exc}): {self.path}") from exc
        self._sealed = True
        return self.size

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent; after :meth:`commit` it does nothing)."""
        fd, self._fd = self._fd, None
        if fd is None:
            if self._sealed:
                _remove_quietly(self.temp)  # sealed but not placed (place() removes it otherwise)
                self._sealed = False
            return
        try:
            os.close(fd)
        except OSError:
            pass
        _remove_quietly(self.temp)


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


def make_folders(folder: Path, *, fsync: bool = True) -> None:
    """Create ``folder`` and its missing parents, each made durable in its parent.

    Safe against a concurrent creator (another association storing into the
    same new series at the same moment).

    Raises:
        OSError: a folder cannot be created (permission, a file in the way).
    """
    missing: list[Path] = []
    current = folder
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o755)
        except FileExistsError:
            if not created.is_dir():
                raise
            continue
        if fsync:
            fsync_folder(created.parent)


def fsync_folder(folder: Path) -> None:
    """fsync a folder, so a name made or removed in it is durable (raises OSError)."""
    fd = os.open(folder, _DIR_FLAGS)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder_durably(folder: Path) -> None:
    """fsync a folder, so the names it holds (a rename, a new file) survive a crash.

    Raises:
        StorageWriteError: the folder cannot be opened or synced.
    """
    try:
        fsync_folder(folder)
    except OSError as exc:
        raise StorageWriteError(f"cannot sync the folder ({exc.strerror or exc}): {folder}") from exc


def _remove_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # observer: the write already failed and is reported
        log.warning("could not remove temporary file %s: %s", path, exc.strerror)


__all__ = ["PendingFile", "fsync_folder", "make_folders", "sync_folder_durably", "write_atomic"]
