"""One object from the source backend to the target, verified; never overwriting what the target holds.

:meth:`Copier.copy` decides per key:

- the source is missing → ``failed`` ("source missing"), nothing written;
- the target already holds the same bytes (same size, then its ETag or a
  SHA-256 read back, :mod:`.digest`) → ``present``: not copied again (a rerun
  after a kill);
- the target holds *other* bytes under that key → ``failed``: it is never
  overwritten (it may be a newer instance stored there directly);
- else the object is copied (``create``: conditional, so an object another
  writer put there meanwhile is compared, not overwritten; streamed, multipart on S3 when
  large) and verified; a copy that does not verify is deleted from the target
  again and reported ``failed``.

A filesystem source is uploaded from its file; an S3 source is first streamed
into a file of the scratch folder (hashed on the way, checked against its
ETag), then written through the target's ``create``. With ``dry_run``
nothing is written: ``copied`` then means "would copy".

Transient errors of either store (:class:`~dicomflow.blobs.BlobUnavailable`)
propagate: the run stops and is resumed by running it again.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicomflow.blobs import BlobInfo, BlobNotFound, BlobStore, FilesystemStore
from dicomflow.errors import DicomflowError
from dicomflow.storage_migrate.digest import Digest, digest_of

log = logging.getLogger(__name__)

Outcome = Literal["copied", "present", "failed"]
#: How the target's bytes were found equal: its ETag, or a SHA-256 read back ("" for a dry run).
Check = Literal["etag", "sha256", ""]


@dataclass(frozen=True)
class CopyResult:
    """What happened to one key; ``size`` in bytes, ``reason`` for ``failed``."""

    key: str
    outcome: Outcome
    size: int = 0
    check: Check = ""
    reason: str = ""


class Copier:
    """Copies keys from ``source`` to ``target``; thread-safe (the stores are, and it keeps no state)."""

    def __init__(self, source: BlobStore, target: BlobStore, *, part_size: int, scratch: Path,
                 dry_run: bool = False) -> None:
        self.source = source
        self.target = target
        self.part_size = part_size
        self.scratch = scratch
        self.dry_run = dry_run

    def copy(self, key: str) -> CopyResult:
        """Copy ``key`` unless the target has it; see the module docstring.

        Raises:
            BlobUnavailable: either store cannot serve now (transient).
            BlobLocationError: ``key`` is refused by a store.
        """
        try:
            src = self.source.head(key)
        except BlobNotFound:
            return CopyResult(key, "failed", reason=f"source missing: {self.source.location(key)}")
        try:
            dst: BlobInfo | None = self.target.head(key)
        except BlobNotFound:
            dst = None
        if dst is not None:
            return self._already_there(key, src, dst)
        if self.dry_run:
            return CopyResult(key, "copied", src.size)
        try:
            with self._local_copy(key, src) as (path, digest):
                created = self.target.create(key, path)  # never over an object another writer just put there
        except _SourceChanged as exc:
            return CopyResult(key, "failed", reason=str(exc))
        except BlobNotFound:
            return CopyResult(key, "failed", reason=f"source missing: {self.source.location(key)}")
        if not created:
            return self._already_there(key, src, self.target.head(key))
        return self._verify(key, digest)

    def _already_there(self, key: str, src: BlobInfo, dst: BlobInfo) -> CopyResult:
        if dst.size != src.size:
            return CopyResult(key, "failed", reason=f"the target already holds {dst.size} bytes under this key, the "
                                                    f"source {src.size}: left as it is, not overwritten")
        check = self._same_bytes(key, src, dst)
        if check:
            return CopyResult(key, "present", src.size, check)
        return CopyResult(key, "failed", reason="the target already holds other bytes of the same size under this "
                                                "key: left as it is, not overwritten")

    def _same_bytes(self, key: str, src: BlobInfo, dst: BlobInfo) -> Check:
        """``etag`` or ``sha256`` when source and target hold the same bytes, ``""`` when not."""
        if src.etag or dst.etag:  # hash the side without the ETag (the local file), compare with the other's
            etag, local = (src.etag, self.target) if src.etag else (dst.etag, self.source)
            digest = digest_of(local.stream(key), self.part_size)
            if digest.matches_etag(etag):
                return "etag"
            other = self.source if local is self.target else self.target
            return "sha256" if digest_of(other.stream(key), self.part_size).sha256 == digest.sha256 else ""
        a = digest_of(self.source.stream(key), self.part_size)
        b = digest_of(self.target.stream(key), self.part_size)
        return "sha256" if a.sha256 == b.sha256 else ""

    @contextmanager
    def _local_copy(self, key: str, src: BlobInfo) -> Iterator[tuple[Path, Digest]]:
        """A local file with the source's bytes, and their digest (the source's own file when it is one)."""
        if isinstance(self.source, FilesystemStore):
            digest = digest_of(self.source.stream(key), self.part_size)
            if digest.size != src.size:
                raise _SourceChanged(f"source changed while read ({src.size} bytes, then {digest.size})")
            yield Path(self.source.location(key)), digest
            return
        fd, name = tempfile.mkstemp(dir=self.scratch, prefix=".migrate-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                digest = digest_of(self.source.stream(key), self.part_size, sink=out)
            if digest.size != src.size:
                raise _SourceChanged(f"download of {self.source.location(key)} gave {digest.size} bytes, "
                                     f"the object has {src.size}")
            if not digest.matches_etag(src.etag):  # no MD5 ETag: read it again, compare the SHA-256
                again = digest_of(self.source.stream(key), self.part_size)
                if again.sha256 != digest.sha256:
                    raise _SourceChanged(f"two downloads of {self.source.location(key)} differ")
            yield Path(name), digest
        finally:
            os.unlink(name)

    def _verify(self, key: str, digest: Digest) -> CopyResult:
        """The target's copy checked against the source's digest; deleted again when it differs."""
        try:
            info = self.target.head(key)
        except BlobNotFound:
            return CopyResult(key, "failed", reason=f"{self.target.location(key)} missing right after the copy")
        check: Check = ""
        if info.size != digest.size:
            problem = f"holds {info.size} bytes after the copy, the source {digest.size}"
        elif digest.matches_etag(info.etag):
            check = "etag"
        elif digest_of(self.target.stream(key), self.part_size).sha256 == digest.sha256:
            check = "sha256"
        else:
            problem = "read back, its SHA-256 differs from the source's"
        if check:
            return CopyResult(key, "copied", digest.size, check)
        log.warning("copy of %s did not verify (%s); deleting it from the target", key, problem)
        self.target.delete(key)
        return CopyResult(key, "failed", reason=f"{self.target.location(key)} {problem}; deleted from the target")


class _SourceChanged(DicomflowError):
    """The source's bytes did not hold still while copied (caught inside :class:`Copier`)."""


__all__ = ["Check", "Copier", "CopyResult", "Outcome"]
