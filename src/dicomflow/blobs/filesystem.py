"""The ``filesystem`` backend: objects as files under the storage root, today's layout and guarantees.

Writes go through the atomic, durable recipe of
:mod:`dicomflow.ingest.storage` (temporary file, ``fdatasync``, rename, folder
``fsync``), imported rather than copied so that the rule lives in one place.
A key is the file's path relative to the root; the location in a store event
is the path itself (``<root>/<key>``), as before the storage layer existed.
Listing skips the hidden ``.<name>.<random>.tmp`` files a crashed write may
leave behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from dicomflow.blobs.base import DEFAULT_CHUNK, BlobInfo, Data
from dicomflow.blobs.errors import BlobLocationError, BlobNotFound, BlobUnavailable
from dicomflow.blobs.location import check_key, key_of_path
from dicomflow.ingest.exceptions import StorageWriteError
from dicomflow.ingest.storage import PendingFile, sync_folder_durably, write_atomic


class FilesystemStore:
    """Objects as files under ``root``; ``fsync=False`` trades durability for speed (tests, benchmarks)."""

    backend = "filesystem"

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = Path(os.path.abspath(root))
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, data: Data) -> int:
        path = self._path(key)
        try:
            return write_atomic(path, (data,), fsync=self.fsync)
        except StorageWriteError as exc:
            raise BlobUnavailable(str(path), exc.reason) from exc

    def put_file(self, key: str, source: Path) -> int:
        path = self._path(key)
        try:
            with open(source, "rb") as src:
                pending = PendingFile(path, fsync=self.fsync)
                try:
                    while chunk := src.read(DEFAULT_CHUNK):
                        pending.write(chunk)
                except BaseException:
                    pending.discard()
                    raise
                return pending.commit()
        except FileNotFoundError as exc:
            raise BlobNotFound(str(source), "the source file is missing") from exc
        except StorageWriteError as exc:
            raise BlobUnavailable(str(path), exc.reason) from exc
        except OSError as exc:
            raise BlobUnavailable(str(source), f"cannot read the source file ({exc.strerror or exc})") from exc

    def create(self, key: str, source: Data | Path) -> bool:
        # Written to a temporary file, then hard-linked to its name: link refuses an existing
        # name, so of two writers of one key exactly one creates it (the rule of ingest.duplicates).
        path = self._path(key)
        try:
            pending = PendingFile(path, fsync=self.fsync)
            try:
                if isinstance(source, Path):
                    with open(source, "rb") as src:
                        while chunk := src.read(DEFAULT_CHUNK):
                            pending.write(chunk)
                else:
                    pending.write(source)
                pending.seal()
                try:
                    os.link(pending.temp, path)
                except FileExistsError:
                    return False
            finally:
                pending.discard()  # the sealed temporary file (its data lives on under the name)
            if self.fsync:
                sync_folder_durably(path.parent)
            return True
        except FileNotFoundError as exc:
            raise BlobNotFound(str(source), "the source file is missing") from exc
        except StorageWriteError as exc:
            raise BlobUnavailable(str(path), exc.reason) from exc
        except OSError as exc:
            raise BlobUnavailable(str(path), f"cannot create ({exc.strerror or exc})") from exc

    def copy(self, src: str, dst: str) -> None:
        source = self._path(src)
        if not source.is_file():
            raise BlobNotFound(str(source))
        self.put_file(dst, source)

    def _open(self, key: str) -> BinaryIO:
        """The file of ``key``, opened by its real path once that is known to lie under the root's.

        Raises:
            BlobLocationError: a symbolic link inside the root that points outside it (poison, as
                the consumer's check of a store event's path has always been).
        """
        path = self._path(key)
        real, real_root = os.path.realpath(path), os.path.realpath(self.root)
        if not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise BlobLocationError(str(path), f"resolves to {real}, outside the storage root {real_root}")
        try:
            return open(real, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise self._not_found(path) from exc
        except OSError as exc:
            raise BlobUnavailable(str(path), f"cannot open ({exc.strerror or exc})") from exc

    def _not_found(self, path: Path) -> BlobNotFound | BlobUnavailable:
        """A file that is not there: missing (poison), unless the whole root is gone (an unmounted volume: retry)."""
        if not self.root.is_dir():
            return BlobUnavailable(str(path), f"the storage root {self.root} is missing (not mounted?)")
        return BlobNotFound(str(path))

    def read(self, key: str) -> bytes:
        with self._open(key) as fh:
            return self._read(fh, key, -1)

    def read_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise ValueError(f"a range needs start >= 0 and length >= 0, not {start}, {length}")
        with self._open(key) as fh:
            fh.seek(start)
            return self._read(fh, key, length)

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        if length < 0:
            raise ValueError(f"a head needs length >= 0, not {length}")
        with self._open(key) as fh:
            return self._read(fh, key, length), os.fstat(fh.fileno()).st_size

    def _read(self, fh: BinaryIO, key: str, length: int) -> bytes:
        try:
            return fh.read(length)
        except OSError as exc:
            raise BlobUnavailable(str(self.root / key), f"cannot read ({exc.strerror or exc})") from exc

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        fh = self._open(key)  # here, not in the generator: a missing object raises at the call

        def chunks() -> Iterator[bytes]:
            with fh:
                while chunk := self._read(fh, key, chunk_size):
                    yield chunk

        return chunks()

    def head(self, key: str) -> BlobInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise self._not_found(path) from exc
        except OSError as exc:
            raise BlobUnavailable(str(path), f"cannot stat ({exc.strerror or exc})") from exc
        if not path.is_file():
            raise BlobNotFound(str(path), "not a file")
        return BlobInfo(key, st.st_size)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Sequence[str]) -> None:
        """Unlink every file, then fsync each folder that lost one once (not once per file: a series' files share
        a folder, and a per-file fsync made a 1,000-file purge take over a second); durable when it returns."""
        folders: dict[Path, Path] = {}
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise BlobUnavailable(str(path), f"cannot delete ({exc.strerror or exc})") from exc
            folders.setdefault(path.parent, path)
        if self.fsync:
            for folder, path in folders.items():
                try:
                    sync_folder_durably(folder)
                except StorageWriteError as exc:
                    raise BlobUnavailable(str(path), exc.reason) from exc

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        prefix = prefix.strip("/")
        # A prefix naming a file lists nothing, as on S3 (whole segments: the object is not "under" itself).
        start = self._path(prefix) if prefix else self.root
        yield from self._walk(start, f"{prefix}/" if prefix else "")

    def _walk(self, folder: Path, key_prefix: str) -> Iterator[BlobInfo]:
        """Depth first, entries sorted as their keys sort (a folder ``a`` as ``a/``): global key order."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise BlobUnavailable(str(folder), f"cannot list ({exc.strerror or exc})") from exc
        dirs = {e.name for e in entries if e.is_dir(follow_symlinks=False)}
        for entry in sorted(entries, key=lambda e: e.name + "/" if e.name in dirs else e.name):
            if entry.name in dirs:
                yield from self._walk(Path(entry.path), f"{key_prefix}{entry.name}/")
            elif entry.is_file(follow_symlinks=False) and not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
                yield BlobInfo(key_prefix + entry.name, entry.stat().st_size)

    def location(self, key: str) -> str:
        return os.path.join(self.root, check_key(key))  # a string join (retrieve asks once per instance)

    def key_of(self, location: str) -> str:
        return key_of_path(location, self.root)


__all__ = ["FilesystemStore"]
