"""Checksums of one object, computed in one pass: what S3's ETag should be, and a SHA-256.

**How a copy is verified, and why.** The S3 side is checked against its
ETag, which S3 computes itself: for an object sent in one PUT it is the hex
MD5 of the bytes; for a multipart upload it is the MD5 of the parts' binary
MD5s followed by ``-<parts>`` (:data:`Digest.multipart_etag`, for the part size
dicomflow uploads with, ``storage.s3.multipart_chunk_bytes``). Comparing it with
the MD5 of the local file costs one HEAD and no download, and the local file
is read anyway (for the upload, or as the download). When the ETag is neither
(a multipart upload by another client with another part size; SSE-KMS, whose
ETags are no MD5), the object is read back and its SHA-256 compared instead:
slower, but it decides from the bytes themselves. A filesystem target is
always read back (from the page cache, just after the write) and compared by
SHA-256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO


@dataclass(frozen=True)
class Digest:
    """Size and checksums of one object's bytes."""

    size: int
    md5: str
    #: The ETag of the same bytes uploaded in parts of the part size (None when it fits in one part).
    multipart_etag: str | None
    sha256: str

    def matches_etag(self, etag: str | None) -> bool:
        """True when ``etag`` (quoted or not) is what S3 computes for these bytes, in one PUT or in parts."""
        if not etag:
            return False
        value = etag.strip().strip('"').lower()
        return value == self.md5 or (self.multipart_etag is not None and value == self.multipart_etag)


def digest_of(chunks: Iterable[bytes], part_size: int, sink: BinaryIO | None = None) -> Digest:
    """The :class:`Digest` of the bytes ``chunks`` yields, written on to ``sink`` as they pass (a download).

    ``part_size`` is the multipart upload's part size (> 0).
    """
    if part_size <= 0:
        raise ValueError(f"part size must be positive, not {part_size}")
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    parts: list[bytes] = []
    part = hashlib.md5(usedforsecurity=False)
    in_part = size = 0
    for chunk in chunks:
        md5.update(chunk)
        sha.update(chunk)
        if sink is not None:
            sink.write(chunk)
        size += len(chunk)
        view = memoryview(chunk)
        while view:
            take = min(len(view), part_size - in_part)
            part.update(view[:take])
            in_part += take
            view = view[take:]
            if in_part == part_size:
                parts.append(part.digest())
                part, in_part = hashlib.md5(usedforsecurity=False), 0
    if in_part:
        parts.append(part.digest())
    multipart = None
    if size > part_size:  # what S3Store uploads in parts (it sends one PUT up to the part size)
        multipart = f"{hashlib.md5(b''.join(parts), usedforsecurity=False).hexdigest()}-{len(parts)}"
    return Digest(size, md5.hexdigest(), multipart, sha.hexdigest())


__all__ = ["Digest", "digest_of"]
