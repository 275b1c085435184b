"""WADO-RS (PS3.18 §10.4): instances, metadata, bulk data and frames, streamed from the storage layer.

* Study / series / instance retrieval answers ``multipart/related;
  type="application/dicom"``, one part per instance, produced as the body is
  sent: a file in its stored syntax is read in one call and sent in one
  write up to ``_WHOLE_FILE`` (8 MiB), a larger one copied in chunks of
  :data:`CHUNK` bytes; a transcoded one is built in memory one instance at
  a time. A study is never held in memory; a single instance's answer
  carries a Content-Length. Every file is checked (inside the storage root,
  present) and every syntax negotiated before the first byte, so the status
  code tells the truth; a transcode that fails mid-stream ends the response
  early (the client sees a truncated multipart body) and is logged.
* On ``s3`` an instance is one ranged GET of at most ``_WHOLE_FILE + 1``
  bytes (the whole object when it is no larger; a larger one continues in
  ranges of :data:`_S3_RANGE` bytes, its Content-Length from a HEAD); a
  multi-instance answer fetches up to :data:`_PREFETCH` parts ahead, and
  checks every object's presence (HEADs, concurrently) before the first
  byte. The store's errors become statuses (:func:`~dicomflow.web.context.blob_errors`:
  404 missing, 503 unavailable with Retry-After).
* Metadata is DICOM JSON built from each file's header (without reading
  pixel data; on ``s3`` from ranged reads of the header only), cached on
  local disk (:mod:`dicomflow.web.cache`) and served as one JSON array for
  a study or series; a cold series' headers are read :data:`_HEAD_CONCURRENCY`
  at a time.
* Frames and bulk data: :mod:`dicomflow.web.frames`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomflow.blobs import BlobStore
from dicomflow.imaging.transcode import WRITABLE, Source, TranscodeError, decodable, transcode
from dicomflow.store.queries import StoredInstance
from dicomflow.web.blobio import Blob
from dicomflow.web.context import WebContext, base_url, blob_errors
from dicomflow.web.metadata import bounded, metadata
from dicomflow.web.negotiation import MediaRange, NotAcceptable, choose_syntax, parse_accept, require_or_406
from dicomflow.web.retrieval import audit_retrieval, has_copy, lookup, served_file

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
#: Files up to this size are read in one call (one thread hop per instance) and sent in one write.
_WHOLE_FILE = 8 * 1024 * 1024
#: Files up to this size are read on the event loop when the page cache holds them all (see _read_cached).
_INLINE = 1024 * 1024
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
#: On s3: bytes per ranged GET of an object larger than _WHOLE_FILE.
_S3_RANGE = 8 * 1024 * 1024
#: On s3: parts of a multi-instance answer fetched ahead of the one being sent.
_PREFETCH = 8
#: HEADs (s3) in flight at once for one request.
_HEAD_CONCURRENCY = 32


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    handle = await run_in_threadpool(path.open, "rb")
    try:
        while True:
            chunk = await run_in_threadpool(handle.read, CHUNK)
            if not chunk:
                break
            yield chunk
    finally:
        handle.close()


def _read_small(path: Path) -> bytes | None:
    """The whole file if it has at most :data:`_WHOLE_FILE` bytes, else None (then it is streamed)."""
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size > _WHOLE_FILE:
            return None
        return handle.read()


def _read_cached(path: Path) -> bytearray | None:
    """The whole file if it is small and entirely in the page cache, read without blocking; else None.

    ``preadv2(RWF_NOWAIT)`` returns only what the page cache holds and never
    waits for the disk, so this is safe on the event loop. An instance that
    was just stored or read is normally cached: handing its read to a
    worker thread cost more than the read (thread wake-up and GIL hand-over
    were a fifth of a retrieval's CPU time). Anything else (not cached,
    larger than :data:`_INLINE`, a filesystem without RWF_NOWAIT) gives None
    and the caller reads in a thread.
    """
    if _RWF_NOWAIT is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > _INLINE:
            return None
        buffer = bytearray(size)
        if size and os.preadv(fd, [buffer], 0, _RWF_NOWAIT) != size:
            return None
        return buffer
    except OSError:  # EAGAIN: not (all) cached; EOPNOTSUPP: not supported here
        return None
    finally:
        os.close(fd)


async def _range(store: BlobStore, key: str, start: int, length: int) -> bytes:
    """A ranged read on the loop when the store has an async one (S3Store), else in a worker thread."""
    read_async = getattr(store, "read_range_async", None)
    if read_async is not None:
        data: bytes = await read_async(key, start, length)
        return data
    return await run_in_threadpool(store.read_range, key, start, length)


async def _s3_rest(store: BlobStore, key: str, start: int) -> AsyncIterator[bytes]:
    """An object's bytes from ``start`` on, in ranged GETs of :data:`_S3_RANGE` bytes."""
    while chunk := await _range(store, key, start, _S3_RANGE):
        yield chunk
        start += len(chunk)


async def _read_instance(ctx: WebContext, blob: Blob) -> bytes | bytearray | None:
    """A small object's bytes (filesystem: from the page cache on the loop, else in a thread); None for a large one.

    Raises:
        HTTPException: 404 / 503 from the store (s3).
    """
    if blob.path is not None:
        cached = _read_cached(blob.path)
        if cached is not None:
            return cached
        return await run_in_threadpool(_read_small, blob.path)
    with blob_errors(ctx.store.location(blob.key)):
        # The first _WHOLE_FILE + 1 bytes in one GET: the whole object when it is no larger.
        data = await _range(ctx.store, blob.key, 0, _WHOLE_FILE + 1)
    return data if len(data) <= _WHOLE_FILE else None


async def _large_chunks(ctx: WebContext, blob: Blob) -> AsyncIterator[bytes]:
    """A large object in chunks (filesystem: :data:`CHUNK`; s3: :data:`_S3_RANGE`)."""
    if blob.path is not None:
        async for chunk in _file_chunks(blob.path):
            yield chunk
        return
    async for chunk in _s3_rest(ctx.store, blob.key, 0):
        yield chunk


def _source(ctx: WebContext, blob: Blob) -> Source:
    """What transcode / pydicom read: the local path on the filesystem, the object's bytes on s3."""
    return blob.path if blob.path is not None else ctx.store.read(blob.key)


@dataclass(frozen=True, slots=True)
class _Part:
    """One instance of a retrieval: the object to read, its syntax and the syntax to send."""

    item: StoredInstance
    blob: Blob
    stored: str
    target: str

    @property
    def transcoded(self) -> bool:
        return self.target != self.stored

    def head(self, boundary: str, base: str) -> bytes:
        item = self.item
        location = f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"
        return (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={self.target}\r\n"
                f"Content-Location: {location}\r\n\r\n").encode()


async def _plan(ctx: WebContext, items: Sequence[StoredInstance], ranges: Sequence[MediaRange]) -> list[_Part]:
    """Every object checked and every syntax negotiated before the first byte is sent.

    On s3 a multi-instance answer HEADs its objects (concurrently); a single
    instance's object is checked by its read.

    Raises:
        HTTPException: 406 naming the first instance no acceptable syntax can be made for; 404 / 500 / 503 from
            :func:`~dicomflow.web.retrieval.served_file` and the store.
    """
    plan: list[_Part] = []
    for item in items:
        blob, stored = await served_file(ctx, item)
        try:
            target = choose_syntax(stored, ranges, has_pixels=True)
        except NotAcceptable as exc:
            raise HTTPException(406, f"{item.sop_uid}: {exc}") from exc
        if target == stored and _promised_syntax_fits(item, stored, ranges):
            target = item.target_ts  # serve what the archive promised, when the client does not mind
        plan.append(_Part(item, blob, stored, target))
    if len(plan) > 1 and ctx.store.backend == "s3":
        store = ctx.store

        def head(blob: Blob) -> Callable[[], Awaitable[object]]:
            async def call() -> object:
                with blob_errors(store.location(blob.key)):
                    return await run_in_threadpool(store.head, blob.key)
            return call

        await bounded([head(p.blob) for p in plan], _HEAD_CONCURRENCY)
    return plan


def _promised_syntax_fits(item: StoredInstance, stored: str, ranges: Sequence[MediaRange]) -> bool:
    """A NeedTransfer instance without its copy yet, a client that takes any syntax, a target this server writes."""
    return (item.transfer_status == "NeedTransfer" and not has_copy(item) and _accepts_anything(ranges)
            and bool(item.target_ts) and decodable(stored) and item.target_ts in WRITABLE)


async def _transcoded(ctx: WebContext, part: _Part) -> bytes:
    """The part's instance in its target syntax (one instance in memory).

    Raises:
        TranscodeError: the pixels cannot be converted; HTTPException: 404 / 503 from the store.
    """
    with blob_errors(ctx.store.location(part.blob.key)):
        return await run_in_threadpool(lambda: transcode(_source(ctx, part.blob), part.target))


async def _transcode_first(ctx: WebContext, part: _Part) -> bytes | None:
    """The first part transcoded before the answer starts, so a single instance that cannot be decoded is a 406."""
    if not part.transcoded:
        return None
    try:
        return await _transcoded(ctx, part)
    except TranscodeError as exc:
        raise HTTPException(406, f"{part.item.sop_uid}: cannot convert {part.stored} to {part.target}: {exc}") from exc


async def retrieve(ctx: WebContext, request: Request, level: str) -> Response:
    """GET /studies/{study}[/series/{series}[/instances/{instance}]]: multipart of application/dicom."""
    principal = await ctx.principal(request, "read")
    items = await lookup(ctx, principal, request, level=level)
    plan = await _plan(ctx, items, parse_accept(request.headers.get("accept")))
    boundary = uuid.uuid4().hex
    base = base_url(request)
    first = await _transcode_first(ctx, plan[0])
    media_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if len(plan) == 1:
        # One instance (what viewers ask most): one read in one thread hop (or one GET) and one answer with a
        # Content-Length, sent in one write; only an object over _WHOLE_FILE bytes is streamed.
        head, tail = plan[0].head(boundary, base), f"\r\n--{boundary}--\r\n".encode()
        data = first if first is not None else await _read_instance(ctx, plan[0].blob)
        ctx.metrics.instances_sent.labels("yes" if first is not None else "no").inc()
        audit_retrieval(ctx, principal, request, items, transferred=True)
        if data is not None:
            return Response(b"".join((head, data, tail)), media_type=media_type)
        blob = plan[0].blob
        with blob_errors(ctx.store.location(blob.key)):
            size = blob.path.stat().st_size if blob.path is not None else \
                (await run_in_threadpool(ctx.store.head, blob.key)).size
        return StreamingResponse(_framed(head, _large_chunks(ctx, blob), tail), media_type=media_type,
                                 headers={"Content-Length": str(len(head) + size + len(tail))})
    audit_retrieval(ctx, principal, request, items, transferred=True)
    return StreamingResponse(_parts(ctx, plan, boundary, base, first), media_type=media_type)


async def _framed(head: bytes, chunks: AsyncIterator[bytes], tail: bytes) -> AsyncIterator[bytes]:
    yield head
    async for chunk in chunks:
        yield chunk
    yield tail


async def _part_bytes(ctx: WebContext, part: _Part) -> bytes | bytearray | None:
    """A part's bytes as sent: transcoded, or as stored (None: a large one, streamed)."""
    if part.transcoded:
        return await _transcoded(ctx, part)
    return await _read_instance(ctx, part.blob)


async def _parts(ctx: WebContext, plan: Sequence[_Part], boundary: str, base: str,
                 first: bytes | None) -> AsyncIterator[bytes]:
    """The multipart body, one write per part (a large object in chunks).

    ``first`` is the first part already transcoded by :func:`_transcode_first`, if it was. On s3 up to
    :data:`_PREFETCH` parts are fetched ahead (the GETs overlap; memory stays bounded).
    A transcode or read that fails here ends the body early: the status line is already sent.
    """
    ahead = _PREFETCH if ctx.store.backend == "s3" else 0
    pending: dict[int, asyncio.Future[bytes | bytearray | None]] = {}
    try:
        for n, part in enumerate(plan):
            for m in range(n + 1, min(n + 1 + ahead, len(plan))):
                if m not in pending:
                    pending[m] = asyncio.ensure_future(_part_bytes(ctx, plan[m]))
            head = part.head(boundary, base)
            data: bytes | bytearray | None
            try:
                if n == 0 and first is not None:
                    data = first
                else:
                    data = await (pending.pop(n) if n in pending else _part_bytes(ctx, part))
            except (TranscodeError, HTTPException) as exc:
                log.error("sending %s failed mid-response: %s", part.item.sop_uid, exc)
                raise
            ctx.metrics.instances_sent.labels("yes" if part.transcoded else "no").inc()
            if data is None:  # a large object: in chunks
                yield head
                async for chunk in _large_chunks(ctx, part.blob):
                    yield chunk
                yield b"\r\n"
                continue
            yield b"".join((head, data, b"\r\n"))  # one write per part
        yield f"--{boundary}--\r\n".encode()
    finally:
        for task in pending.values():
            task.cancel()


def _accepts_anything(ranges: Sequence[MediaRange]) -> bool:
    return any(m.transfer_syntax == "*" or m.media_type == "*/*" for m in ranges)


#: What metadata is answered as (``application/json`` too: many clients ask for that).
_METADATA_MEDIA = ("application/dicom+json", "application/json")


async def _metadata(ctx: WebContext, request: Request, lvl: str) -> Response:
    """:func:`~dicomflow.web.metadata.metadata` once the Accept header takes JSON (else 406 with the reason)."""
    require_or_406(request.headers.get("accept"), _METADATA_MEDIA, "metadata")
    return await metadata(ctx, request, lvl)


def routes(ctx: WebContext) -> list[BaseRoute]:
    """The WADO-RS retrieval and metadata routes (frames and bulk data: :mod:`dicomflow.web.frames`;
    rendered and thumbnail: :mod:`dicomflow.web.rendered`)."""

    def level(fn: object, lvl: str) -> object:
        async def endpoint(request: Request) -> Response:
            return await fn(ctx, request, lvl)  # type: ignore[operator, no-any-return]
        return endpoint

    s, se, i = "/studies/{study}", "/studies/{study}/series/{series}", "/studies/{study}/series/{series}/instances/{instance}"
    return [
        Route(s, level(retrieve, "study"), methods=["GET"]),  # type: ignore[arg-type]
        Route(se, level(retrieve, "series"), methods=["GET"]),  # type: ignore[arg-type]
        Route(i, level(retrieve, "instance"), methods=["GET"]),  # type: ignore[arg-type]
        Route(s + "/metadata", level(_metadata, "study"), methods=["GET"]),  # type: ignore[arg-type]
        Route(se + "/metadata", level(_metadata, "series"), methods=["GET"]),  # type: ignore[arg-type]
        Route(i + "/metadata", level(_metadata, "instance"), methods=["GET"]),  # type: ignore[arg-type]
    ]


__all__ = ["CHUNK", "retrieve", "routes"]
