"""WADO-RS (PS3.18 §10.4): instances, metadata, bulk data and frames, streamed from the storage root.

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
* Metadata is DICOM JSON built from each file's header (without reading
  pixel data), cached on disk (:mod:`dicomflow.web.cache`) and served as one
  JSON array for a study or series.
* Frames and bulk data: :mod:`dicomflow.web.frames`.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomflow.imaging.transcode import WRITABLE, TranscodeError, decodable, read, transcode
from dicomflow.store.queries import StoredInstance
from dicomflow.web import dicomjson
from dicomflow.web.cache import MetadataCache
from dicomflow.web.context import WebContext, base_url
from dicomflow.web.negotiation import MediaRange, NotAcceptable, choose_syntax, parse_accept
from dicomflow.web.retrieval import audit_retrieval, has_copy, lookup, served_file

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
#: Files up to this size are read in one call (one thread hop per instance) and sent in one write.
_WHOLE_FILE = 8 * 1024 * 1024
#: Files up to this size are read on the event loop when the page cache holds them all (see _read_cached).
_INLINE = 1024 * 1024
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_json = msgspec.json.Encoder(enc_hook=str)  # pydicom values are str / int subclasses (UID, IS, DSfloat)


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


async def _read_instance(path: Path) -> bytes | bytearray | None:
    """A small file's bytes (from the page cache on the loop, else in a thread); None for a large one."""
    cached = _read_cached(path)
    if cached is not None:
        return cached
    return await run_in_threadpool(_read_small, path)


@dataclass(frozen=True, slots=True)
class _Part:
    """One instance of a retrieval: the file to read, its syntax and the syntax to send."""

    item: StoredInstance
    path: Path
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


def _plan(ctx: WebContext, items: Sequence[StoredInstance], ranges: Sequence[MediaRange]) -> list[_Part]:
    """Every file checked and every syntax negotiated before the first byte is sent.

    Raises:
        HTTPException: 406 naming the first instance no acceptable syntax can be made for; 404 / 500 from
            :func:`~dicomflow.web.retrieval.served_file`.
    """
    plan: list[_Part] = []
    for item in items:
        path, stored = served_file(ctx, item)
        try:
            target = choose_syntax(stored, ranges, has_pixels=True)
        except NotAcceptable as exc:
            raise HTTPException(406, f"{item.sop_uid}: {exc}") from exc
        if target == stored and _promised_syntax_fits(item, stored, ranges):
            target = item.target_ts  # serve what the archive promised, when the client does not mind
        plan.append(_Part(item, path, stored, target))
    return plan


def _promised_syntax_fits(item: StoredInstance, stored: str, ranges: Sequence[MediaRange]) -> bool:
    """A NeedTransfer instance without its copy yet, a client that takes any syntax, a target this server writes."""
    return (item.transfer_status == "NeedTransfer" and not has_copy(item) and _accepts_anything(ranges)
            and bool(item.target_ts) and decodable(stored) and item.target_ts in WRITABLE)


async def _transcode_first(part: _Part) -> bytes | None:
    """The first part transcoded before the answer starts, so a single instance that cannot be decoded is a 406."""
    if not part.transcoded:
        return None
    try:
        return await run_in_threadpool(transcode, part.path, part.target)
    except TranscodeError as exc:
        raise HTTPException(406, f"{part.item.sop_uid}: cannot convert {part.stored} to {part.target}: {exc}") from exc


async def retrieve(ctx: WebContext, request: Request, level: str) -> Response:
    """GET /studies/{study}[/series/{series}[/instances/{instance}]]: multipart of application/dicom."""
    principal = await ctx.principal(request, "read")
    items = await lookup(ctx, principal, request, level=level)
    plan = _plan(ctx, items, parse_accept(request.headers.get("accept")))
    boundary = uuid.uuid4().hex
    base = base_url(request)
    first = await _transcode_first(plan[0])
    media_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if len(plan) == 1:
        # One instance (what viewers ask most): one read in one thread hop and one answer with a
        # Content-Length, sent in one write; only a file over _WHOLE_FILE bytes is streamed.
        data = first if first is not None else await _read_instance(plan[0].path)
        if data is not None:
            ctx.metrics.instances_sent.labels("yes" if first is not None else "no").inc()
            audit_retrieval(ctx, principal, request, items, transferred=True)
            body = b"".join((plan[0].head(boundary, base), data, f"\r\n--{boundary}--\r\n".encode()))
            return Response(body, media_type=media_type)
    audit_retrieval(ctx, principal, request, items, transferred=True)
    return StreamingResponse(_parts(ctx, plan, boundary, base, first), media_type=media_type)


async def _parts(ctx: WebContext, plan: Sequence[_Part], boundary: str, base: str,
                 first: bytes | None) -> AsyncIterator[bytes]:
    """The multipart body, one write per part (a large file in chunks of :data:`CHUNK` bytes).

    ``first`` is the first part already transcoded by :func:`_transcode_first`, if it was.
    A transcode that fails here ends the body early: the status line is already sent.
    """
    for part in plan:
        head = part.head(boundary, base)
        if not part.transcoded:
            data = await _read_instance(part.path)
            ctx.metrics.instances_sent.labels("no").inc()
            if data is None:  # a large file: in chunks of CHUNK bytes
                yield head
                async for chunk in _file_chunks(part.path):
                    yield chunk
                yield b"\r\n"
                continue
        else:
            try:
                data = first if first is not None else await run_in_threadpool(transcode, part.path, part.target)
                first = None
            except TranscodeError as exc:
                log.error("transcoding %s to %s failed mid-response: %s", part.item.sop_uid, part.target, exc)
                raise
            ctx.metrics.instances_sent.labels("yes").inc()
        yield b"".join((head, data, b"\r\n"))  # one write per part
    yield f"--{boundary}--\r\n".encode()


def _accepts_anything(ranges: Sequence[MediaRange]) -> bool:
    return any(m.transfer_syntax == "*" or m.media_type == "*/*" for m in ranges)


# --------------------------------------------------------------------------- metadata


def build_metadata(path: Path, item: StoredInstance) -> bytes:
    """One instance's DICOM JSON (header only; bulk data as relative BulkDataURIs)."""
    ds = read(path, stop_before_pixels=True)
    prefix = f"/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}/bulkdata/"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = dicomjson.dataset_json(ds, lambda tag_path: prefix + tag_path, pixel_data="Rows" in ds)
    return _json.encode(doc)


async def _metadata_document(ctx: WebContext, cache: MetadataCache, tenant: str, item: StoredInstance) -> bytes:
    where = cache.path(tenant, item.study_uid, item.series_uid, item.sop_uid, item.trace_id)
    cached = await run_in_threadpool(cache.get, where)
    if cached is not None:
        ctx.metrics.metadata_cache.labels("hit").inc()
        return cached
    path = ctx.resolve(item.file_path)
    document = await run_in_threadpool(build_metadata, path, item)
    await run_in_threadpool(cache.put, where, document)
    ctx.metrics.metadata_cache.labels("built").inc()
    return document


async def metadata(ctx: WebContext, request: Request, level: str) -> Response:
    """GET …/metadata: a JSON array of the instances' DICOM JSON."""
    principal = await ctx.principal(request, "read")
    items = await lookup(ctx, principal, request, level=level)
    cache = MetadataCache(ctx.storage_root)
    base = base_url(request)

    async def body() -> AsyncIterator[bytes]:
        yield b"["
        for i, item in enumerate(items):
            document = await _metadata_document(ctx, cache, principal.tenant, item)
            yield (b"," if i else b"") + dicomjson.absolute_bulk_uris(document, base)
        yield b"]"

    # Build the first document before answering, so a broken file is an error status, not a cut body.
    first = await _metadata_document(ctx, cache, principal.tenant, items[0])
    del first
    audit_retrieval(ctx, principal, request, items, transferred=False)
    return StreamingResponse(body(), media_type="application/dicom+json")


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
        Route(s + "/metadata", level(metadata, "study"), methods=["GET"]),  # type: ignore[arg-type]
        Route(se + "/metadata", level(metadata, "series"), methods=["GET"]),  # type: ignore[arg-type]
        Route(i + "/metadata", level(metadata, "instance"), methods=["GET"]),  # type: ignore[arg-type]
    ]


__all__ = ["CHUNK", "build_metadata", "retrieve", "routes"]
