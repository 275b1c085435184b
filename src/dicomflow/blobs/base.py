"""The one interface over instance bytes: :class:`BlobStore`, and :class:`BlobInfo`.

Every operation takes a *key* (:mod:`.location`); a store event's location is
turned into one by :meth:`BlobStore.key_of`, which refuses what could reach
outside the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

#: Bytes a write takes (what ``os.write`` and obstore accept alike).
Data = bytes | bytearray | memoryview

#: Chunk size of :meth:`BlobStore.stream` and of file copies: bounded memory per reader.
DEFAULT_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class BlobInfo:
    """An object's key, size in bytes and, on S3, its ETag (a multipart upload's ends in ``-<parts>``)."""

    key: str
    size: int
    etag: str | None = None


@runtime_checkable
class BlobStore(Protocol):
    """Instance bytes on one backend (filesystem or S3).

    Writes are durable when they return: the filesystem's data and name are
    synced (unless built with ``fsync=False``), S3 acknowledged the PUT (or
    completed the multipart upload). A write replaces an existing object
    atomically: readers see the old bytes or the new, never a mix.

    Raises (every method):
        BlobNotFound: the object is not there (reads and :meth:`head`).
        BlobLocationError: a key or location this store refuses.
        BlobUnavailable: the store cannot serve now (transient).
    """

    backend: str

    def put(self, key: str, data: Data) -> int:
        """Write ``data`` as the object ``key``; return its size."""
        ...

    def put_file(self, key: str, source: Path) -> int:
        """Write the local file ``source`` as ``key`` (streamed, multipart when large); return its size."""
        ...

    def create(self, key: str, source: Data | Path) -> bool:
        """Write ``source`` (bytes, or a local file streamed up) as ``key`` only if no object is there.

        True when this call created it; False when ``key`` existed already
        (nothing is written). Two callers racing for one key: exactly one
        gets True (S3: a conditional PUT, ``If-None-Match: *``; filesystem: a
        hard link, which refuses an existing name). Durable as :meth:`put`.
        Exception: on S3 an object larger than ``multipart_chunk_bytes`` goes
        up in parts after a HEAD found the key free (the client offers no
        conditional multipart upload): bounded memory, but two creators
        racing inside that window both get True, the later one's bytes win.
        """
        ...

    def copy(self, src: str, dst: str) -> None:
        """Copy the object ``src`` to ``dst`` (replacing ``dst``), inside the store (S3: server-side)."""
        ...

    def read(self, key: str) -> bytes:
        """The whole object."""
        ...

    def read_range(self, key: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from offset ``start`` (fewer at the end, ``b""`` past it)."""
        ...

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        """The first ``length`` bytes (fewer for a shorter object) and the object's whole size, in one request."""
        ...

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        """The object in chunks (a missing object raises here, before the first chunk)."""
        ...

    def head(self, key: str) -> BlobInfo:
        """The object's size."""
        ...

    def exists(self, key: str) -> bool:
        """True when the object is there."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing one is no error (idempotent)."""
        ...

    def delete_many(self, keys: Sequence[str]) -> None:
        """Remove several objects (S3: one DeleteObjects request per 1,000 keys); missing ones are no error."""
        ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every object under ``prefix``, in key order.

        ``prefix`` matches whole segments, like a folder: ``t1/2024`` lists
        ``t1/2024/...``, not ``t1/20240101/...``; ``""`` lists everything.
        """
        ...

    def location(self, key: str) -> str:
        """What a store event names: a path (filesystem) or ``s3://bucket/key``."""
        ...

    def key_of(self, location: str) -> str:
        """The key a store event's location names (validated, see :mod:`.location`)."""
        ...


__all__ = ["DEFAULT_CHUNK", "BlobInfo", "BlobStore", "Data"]
