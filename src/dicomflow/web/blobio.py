"""Instance bytes for DICOMweb, through the storage layer: whole, as a stream, or as a seekable file.

* :class:`Blob`: an object an index row names, its key and, on the
  filesystem backend, its checked real path (the fast local reads of
  :mod:`dicomflow.web.wado` keep using it, through the FilesystemStore's
  location of the key);
* :class:`RangedFile`: a read-only, seekable file over ``store.read_range``,
  so that pydicom parses a header, and finds a frame, with ranged reads:
  it fetches :data:`BLOCK` bytes at a time and keeps the last block, so a
  header of a few kB costs one request and a frame one or two more; a read
  larger than a block is one request of exactly that range;
* :func:`open_source`: the seekable file of a blob (the local file itself on
  the filesystem, a :class:`RangedFile` on ``s3``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from dicomflow.blobs import BlobStore

#: Bytes a :class:`RangedFile` fetches at least per request (a typical header fits in one).
BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Blob:
    """The object of an index row: its key in the store, and its real local path on the filesystem backend."""

    key: str
    path: Path | None


class RangedFile(io.RawIOBase):
    """A read-only seekable view of one object, read by ranges (the object's size asked only when needed)."""

    def __init__(self, store: BlobStore, key: str, *, size: int | None = None, block: int = BLOCK) -> None:
        super().__init__()
        self.store = store
        self.key = key
        self.block = block
        self.requests = 0
        self._size = size
        self._pos = 0
        self._cache_start = 0
        self._cache = b""

    @property
    def size(self) -> int:
        if self._size is None:
            self._size = self.store.head(self.key).size
            self.requests += 1
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(self.size - self._pos, 0)
        if size == 0:
            return b""
        start, end = self._pos, self._pos + size
        cached_end = self._cache_start + len(self._cache)
        if self._cache_start <= start and end <= cached_end:
            data = self._cache[start - self._cache_start:end - self._cache_start]
        elif size >= self.block:
            data = self._fetch(start, size)
        else:
            self._cache_start, self._cache = start, self._fetch(start, self.block)
            data = self._cache[:size]
        self._pos += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        memoryview(buffer)[:len(data)] = data
        return len(data)

    def _fetch(self, start: int, length: int) -> bytes:
        self.requests += 1
        data = self.store.read_range(self.key, start, length)
        if len(data) < length and self._size is None:
            self._size = start + len(data)  # a short read ends the object
        return data


def open_source(store: BlobStore, blob: Blob) -> BinaryIO:
    """A seekable binary file of the object, positioned at 0 (the caller closes it).

    Raises:
        BlobNotFound, BlobUnavailable: from the store (an ``s3`` object's absence shows at the first read).
    """
    if blob.path is not None:
        try:
            return open(blob.path, "rb")
        except FileNotFoundError as exc:
            from dicomflow.blobs import BlobNotFound

            raise BlobNotFound(str(blob.path)) from exc
    return cast(BinaryIO, RangedFile(store, blob.key))


__all__ = ["BLOCK", "Blob", "RangedFile", "open_source"]
