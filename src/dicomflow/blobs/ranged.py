"""An object as a seekable, read-only file, for readers that parse part of it (pydicom).

* :class:`RangedFile`: a read-only, seekable file over ``store.read_range``,
  so that pydicom parses a header, and finds a frame, with ranged reads:
  it fetches :data:`BLOCK` bytes at a time and keeps the last block, so a
  header of a few kB costs one request and a frame one or two more; a read
  larger than a block is one request of exactly that range;
* :func:`open_object`: the seekable file of an object (the local file itself
  on the filesystem, a :class:`RangedFile` on ``s3``).

Used by DICOMweb (metadata, frames, rendered) and the image workers
(thumbnails); not part of the :class:`~dicomflow.blobs.base.BlobStore` protocol.
"""

from __future__ import annotations

import io
import os
from typing import BinaryIO, cast

from dicomflow.blobs.base import BlobStore
from dicomflow.blobs.errors import BlobNotFound, BlobUnavailable

#: Bytes a :class:`RangedFile` fetches at least per request (a typical header fits in one).
BLOCK = 64 * 1024


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


def open_object(store: BlobStore, key: str) -> BinaryIO:
    """A seekable binary file of the object ``key`` at offset 0 (the caller closes it).

    The local file itself on the filesystem backend (opened at the store's
    location of the key), a :class:`RangedFile` elsewhere.

    Raises:
        BlobNotFound, BlobUnavailable: from the store (an ``s3`` object's absence shows at the first read;
            on the filesystem a storage root that is gone is BlobUnavailable, not a missing file).
    """
    if store.backend == "filesystem":
        where = store.location(key)
        try:
            return open(where, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            try:
                store.head(key)  # the store tells a missing file from a storage root that is gone (unmounted)
            except BlobUnavailable as gone:
                raise gone from exc
            except BlobNotFound:
                pass
            raise BlobNotFound(where) from exc
        except OSError as exc:
            raise BlobUnavailable(where, f"cannot open ({exc.strerror or exc})") from exc
    return cast(BinaryIO, RangedFile(store, key))


__all__ = ["BLOCK", "RangedFile", "open_object"]
