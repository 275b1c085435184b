"""The ``s3`` backend: objects in an S3-compatible bucket, through obstore.

Why obstore (Rust's ``object_store`` crate) and not boto3: measured against
S3Proxy on this (shared, 2-core) machine, 25 kB objects, 300 per run, 3
alternated runs, medians (``benchmarks/bench_blobs.py --boto3``; all figures
in docs/storage.md): PUT boto3 4.4-5.0 ms per object (6.7 ms in a first, bare
loop), obstore 1.5-2.7 ms; GET 3.5-4.6 ms against 0.9-1.0 ms. Issue 18 had
quoted 6.8 ms against 1.4 ms: the ratio holds, the absolute figures move
with the machine's load. boto3's
cost is in Python (request building, SigV4 signing, botocore's event hooks) and
stays per object; obstore signs and sends in Rust with the GIL released. It
also brings ranged reads, streaming, and multipart uploads from a file with
bounded memory, in one small wheel with no dependencies.

Guarantees: :meth:`S3Store.put` returns once S3 answered the PUT (or completed
the multipart upload) with success, i.e. the object is stored as the service
stores anything. An object larger than ``multipart_chunk_bytes`` goes up in
parts of that size, at most :data:`_PART_CONCURRENCY` at a time, read from
the local file as they are sent: memory per upload stays below
``chunk × concurrency`` whatever the object's size. A failed multipart
upload is aborted by obstore; parts it could not abort are left to the
bucket's lifecycle rule (docs/storage.md).

Errors (:mod:`.errors`): obstore's not-found (raised as Python's
``FileNotFoundError`` at run time, ``NotFoundError`` in its stubs) →
:class:`BlobNotFound`; permission denied / unauthenticated (``PermissionError``,
``PermissionDeniedError``, ``UnauthenticatedError``) → :class:`BlobAccessDenied`; everything else (5xx after obstore's few retries,
timeouts, refused connections) → :class:`BlobUnavailable`. obstore retries
at most :data:`_RETRIES` times within :data:`_RETRY_TIMEOUT`, so an outage
reaches the caller in seconds and is retried there (like a database outage),
not hidden for minutes inside the client.

Fields of ``[storage.s3]`` left empty fall back as documented in
:mod:`dicomflow.settings.aws`; obstore itself also reads the ``AWS_*``
variables the settings do not cover (a session token, a web-identity token).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import obstore
from obstore.exceptions import AlreadyExistsError, BaseError, NotFoundError, PermissionDeniedError, UnauthenticatedError

from dicomflow.blobs.base import DEFAULT_CHUNK, BlobInfo, Data
from dicomflow.blobs.errors import BlobAccessDenied, BlobError, BlobNotFound, BlobUnavailable
from dicomflow.blobs.location import check_key, key_of_s3, normalize_prefix, s3_location
from dicomflow.settings import StorageS3Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig

#: Parts of one multipart upload in flight at once (memory: this × multipart_chunk_bytes).
_PART_CONCURRENCY = 4
_RETRIES = 2
_RETRY_TIMEOUT = timedelta(seconds=10)
_CONNECT_TIMEOUT = timedelta(seconds=5)
#: Whole-request limit; a stream of a large object must finish within it.
_REQUEST_TIMEOUT = timedelta(minutes=10)

T = TypeVar("T")

#: What obstore raises: its own classes, and builtins (FileNotFoundError, PermissionError, TimeoutError ...).
_CLIENT_ERRORS = (BaseError, OSError)
_NOT_FOUND = (NotFoundError, FileNotFoundError)
_DENIED = (PermissionDeniedError, UnauthenticatedError, PermissionError)


class S3Store:
    """Objects in ``settings.bucket`` under ``settings.prefix``, through one obstore client (thread-safe)."""

    backend = "s3"

    def __init__(self, settings: StorageS3Settings) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = normalize_prefix(settings.prefix)
        self.chunk = settings.multipart_chunk_bytes
        client: ClientConfig = {"connect_timeout": _CONNECT_TIMEOUT, "timeout": _REQUEST_TIMEOUT,
                                "allow_http": settings.endpoint.startswith("http://")}
        retry: RetryConfig = {"max_retries": _RETRIES, "retry_timeout": _RETRY_TIMEOUT}
        config: dict[str, Any] = {"region": settings.region,
                                  "virtual_hosted_style_request": not settings.path_style}
        if settings.endpoint:
            config["endpoint"] = settings.endpoint
        if settings.access_key_id and settings.secret_access_key:
            config["access_key_id"] = settings.access_key_id
            config["secret_access_key"] = settings.secret_access_key
        self._store = obstore.store.S3Store(
            settings.bucket, prefix=self.prefix.rstrip("/") or None, client_options=client, retry_config=retry, **config,
        )

    def _call(self, key: str, what: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except _CLIENT_ERRORS as exc:
            _raise(exc, self.location(key), what)

    def put(self, key: str, data: Data) -> int:
        check_key(key)
        size = memoryview(data).nbytes
        self._call(key, "put", lambda: obstore.put(
            self._store, key, data, use_multipart=size > self.chunk, chunk_size=self.chunk,
            max_concurrency=_PART_CONCURRENCY))
        return size

    def put_file(self, key: str, source: Path) -> int:
        check_key(key)
        size = _size_of(source)
        self._call(key, "put", lambda: obstore.put(
            self._store, key, Path(source), use_multipart=size > self.chunk, chunk_size=self.chunk,
            max_concurrency=_PART_CONCURRENCY))
        return size

    def create(self, key: str, source: Data | Path) -> bool:
        # Up to multipart_chunk_bytes: one conditional PUT (If-None-Match: *); S3 answers 412 when
        # the key exists, which obstore raises as AlreadyExistsError. Above it, obstore would send a
        # conditional PUT as a single request with the whole body in memory (it makes no conditional
        # multipart upload), so a HEAD decides and the upload goes in parts: memory stays bounded,
        # at the price of a window in which a concurrent creator of the same key is not seen.
        check_key(key)
        size = _size_of(source)
        if size > self.chunk:
            if self.exists(key):
                return False
            self._call(key, "put", lambda: obstore.put(
                self._store, key, source, use_multipart=True, chunk_size=self.chunk, max_concurrency=_PART_CONCURRENCY))
            return True
        try:
            obstore.put(self._store, key, source, mode="create", use_multipart=False)
        except AlreadyExistsError:
            return False
        except _CLIENT_ERRORS as exc:
            _raise(exc, self.location(key), "create")
        return True

    def copy(self, src: str, dst: str) -> None:
        check_key(src)
        check_key(dst)
        self._call(src, "copy", lambda: obstore.copy(self._store, src, dst))

    def read(self, key: str) -> bytes:
        check_key(key)
        return self._call(key, "get", lambda: bytes(obstore.get(self._store, key).bytes()))

    def read_range(self, key: str, start: int, length: int) -> bytes:
        check_key(key)
        if start < 0 or length < 0:
            raise ValueError(f"a range needs start >= 0 and length >= 0, not {start}, {length}")
        if length == 0:
            return b""
        try:
            return bytes(obstore.get_range(self._store, key, start=start, length=length))
        except _NOT_FOUND as exc:
            _raise(exc, self.location(key), "get range")
        except _CLIENT_ERRORS as exc:
            # S3 answers 416 to a range past the end, obstore an error: the layer's contract is b"".
            if start >= self.head(key).size:
                return b""
            _raise(exc, self.location(key), "get range")

    def read_head(self, key: str, length: int) -> tuple[bytes, int]:
        check_key(key)
        if length < 0:
            raise ValueError(f"a head needs length >= 0, not {length}")
        try:
            result = obstore.get(self._store, key, options={"range": (0, max(length, 1))})
            return bytes(result.bytes())[:length], int(result.meta["size"])
        except _NOT_FOUND as exc:
            _raise(exc, self.location(key), "get head")
        except _CLIENT_ERRORS as exc:
            # An empty object has no byte 0: S3 answers 416, obstore an error.
            if self.head(key).size == 0:
                return b"", 0
            _raise(exc, self.location(key), "get head")
    async def read_range_async(self, key: str, start: int, length: int) -> bytes:
        """:meth:`read_range` on the running asyncio loop (obstore's async client: no worker thread)."""
        check_key(key)
        if start < 0 or length < 0:
            raise ValueError(f"a range needs start >= 0 and length >= 0, not {start}, {length}")
        if length == 0:
            return b""
        try:
            return bytes(await obstore.get_range_async(self._store, key, start=start, length=length))
        except _NOT_FOUND as exc:
            _raise(exc, self.location(key), "get range")
        except _CLIENT_ERRORS as exc:
            if start >= self.head(key).size:
                return b""
            _raise(exc, self.location(key), "get range")

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK) -> Iterator[bytes]:
        check_key(key)
        result = self._call(key, "get", lambda: obstore.get(self._store, key))
        where = self.location(key)

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in result.stream(min_chunk_size=chunk_size):
                    yield bytes(chunk)
            except _CLIENT_ERRORS as exc:
                _raise(exc, where, "stream")

        return chunks()

    def head(self, key: str) -> BlobInfo:
        check_key(key)
        meta = self._call(key, "head", lambda: obstore.head(self._store, key))
        return BlobInfo(key, int(meta["size"]), meta["e_tag"])

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except BlobNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        check_key(key)
        try:
            obstore.delete(self._store, key)
        except _NOT_FOUND:
            return
        except _CLIENT_ERRORS as exc:
            _raise(exc, self.location(key), "delete")

    def delete_many(self, keys: Sequence[str]) -> None:
        for key in keys:
            check_key(key)
        if not keys:
            return
        try:
            obstore.delete(self._store, list(keys))
        except _NOT_FOUND:
            return
        except _CLIENT_ERRORS as exc:
            _raise(exc, self.location(keys[0]), f"delete of {len(keys)} objects")

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        try:
            for batch in obstore.list(self._store, prefix or None, chunk_size=1000):
                for meta in batch:
                    yield BlobInfo(meta["path"], int(meta["size"]), meta["e_tag"])
        except _CLIENT_ERRORS as exc:
            _raise(exc, f"s3://{self.bucket}/{self.prefix}{prefix}", "list")

    def location(self, key: str) -> str:
        return s3_location(self.bucket, self.prefix, key)

    def key_of(self, location: str) -> str:
        return key_of_s3(location, self.bucket, self.prefix)


def _size_of(source: Data | Path) -> int:
    """Bytes a write of ``source`` sends: a buffer's length, or the local file's size.

    Raises:
        BlobNotFound: the source file is missing.
        BlobUnavailable: it cannot be read.
    """
    if not isinstance(source, Path):
        return memoryview(source).nbytes
    try:
        return os.stat(source).st_size
    except FileNotFoundError as exc:
        raise BlobNotFound(str(source), "the source file is missing") from exc
    except OSError as exc:
        raise BlobUnavailable(str(source), f"cannot read the source file ({exc.strerror or exc})") from exc


def _raise(exc: Exception, where: str, what: str) -> NoReturn:
    """Translate an obstore error into the layer's, by type (see the module docstring)."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    err: BlobError
    if isinstance(exc, _NOT_FOUND):
        err = BlobNotFound(where)
    elif isinstance(exc, _DENIED):
        err = BlobAccessDenied(where, f"{what} refused: {first_line[:300]}")
    else:
        err = BlobUnavailable(where, f"{what} failed: {first_line[:300]}")
    raise err from exc


__all__ = ["S3Store"]
