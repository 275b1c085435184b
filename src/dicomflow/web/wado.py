"""WADO-RS (PS3.18 §10.4): instances, metadata, bulk data and frames, streamed from the storage root.

* Study / series / instance retrieval answers ``multipart/related;
  type="application/dicom"``, one part per instance, produced as the body is
  sent: a file in its stored syntax is copied in chunks of :data:`CHUNK`
  bytes; a transcoded one is built in memory one instance at a time. A study
  is never held in memory. Every file is checked (inside the storage root,
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
from pathlib import Path

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from dicomflow.audit import dicomweb as dicomweb_audit
from dicomflow.store import queries
from dicomflow.store.queries import StoredInstance
from dicomflow.web import dicomjson, transcode
from dicomflow.web.auth import Principal
from dicomflow.web.cache import MetadataCache
from dicomflow.web.context import WebContext, base_url, check_uid, client_address

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
#: Files up to this size are read in one call (one thread hop per instance) and sent in one write.
_WHOLE_FILE = 8 * 1024 * 1024
#: Files up to this size are read on the event loop when the page cache holds them all (see _read_cached).
_INLINE = 1024 * 1024
_RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
_json = msgspec.json.Encoder(enc_hook=str)  # pydicom values are str / int subclasses (UID, IS, DSfloat)


async def lookup(ctx: WebContext, principal: Principal, request: Request, *, level: str) -> list[StoredInstance]:
    """The indexed instances the path names, in the caller's tenant (404 when none)."""
    p = request.path_params
    study = check_uid(p["study"], "StudyInstanceUID")
    series = check_uid(p["series"], "SeriesInstanceUID") if "series" in p else None
    sop = check_uid(p["instance"], "SOPInstanceUID") if "instance" in p else None
    async with ctx.pool.connection() as conn:
        found = await queries.instances(conn, principal.tenant, study, series, sop)
    if not found:
        raise HTTPException(404, f"no such {level}")
    return found


def _audit_retrieval(ctx: WebContext, principal: Principal, request: Request, items: Sequence[StoredInstance],
                     *, transferred: bool) -> None:
    by_study: dict[str, list[StoredInstance]] = {}
    for item in items:
        by_study.setdefault(item.study_uid, []).append(item)
    node = ctx.settings.worker_node_id
    events = []
    for study, group in by_study.items():
        common = {"node_id": node, "tenant_id": principal.tenant, "study_uid": study, "instance_count": len(group),
                  "user": principal.user, "user_address": client_address(request), "resource": request.url.path,
                  "patient_id": group[0].patient_id}
        if transferred:
            events.append(dicomweb_audit.instances_retrieved(sop_classes=[g.sop_class_uid for g in group], **common))  # type: ignore[arg-type]
        else:
            events.append(dicomweb_audit.instances_accessed(**common))  # type: ignore[arg-type]
    ctx.audit(events)


def _served_file(ctx: WebContext, item: StoredInstance) -> tuple[Path, str]:
    """The file to send and its syntax: the image workers' copy for a NeedTransfer instance, if present.

    ``dicomflow images`` sets the receipt to ``Success`` once the copy exists;
    until then the consumer's ``pixel_data_location`` is the original's path.
    """
    copy = item.pixel_data_location
    if item.transfer_status in ("NeedTransfer", "Success") and copy and _has_copy(item):
        try:
            return ctx.resolve(copy), item.target_ts
        except HTTPException:
            log.warning("served copy %s of %s unusable; using the original", item.pixel_data_location, item.sop_uid)
    return ctx.resolve(item.file_path), item.transfer_syntax_uid


def _has_copy(item: StoredInstance) -> bool:
    """True when the image workers made a served copy (not the consumer's pointer to the original)."""
    return bool(item.pixel_data_location) and item.pixel_data_location != item.file_path


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


async def retrieve(ctx: WebContext, request: Request, level: str) -> Response:
    """GET /studies/{study}[/series/{series}[/instances/{instance}]]: multipart of application/dicom."""
    principal = await ctx.principal(request, "read")
    items = await lookup(ctx, principal, request, level=level)
    ranges = transcode.parse_accept(request.headers.get("accept"))
    plan: list[tuple[StoredInstance, Path, str, str]] = []
    for item in items:
        path, stored = _served_file(ctx, item)
        try:
            target = transcode.choose_syntax(stored, ranges, has_pixels=True)
        except transcode.NotAcceptable as exc:
            raise HTTPException(406, f"{item.sop_uid}: {exc}") from exc
        if target == stored and item.transfer_status == "NeedTransfer" and not _has_copy(item) \
                and _accepts_anything(ranges) and item.target_ts and transcode.decodable(stored) \
                and item.target_ts in transcode.WRITABLE:
            target = item.target_ts  # serve what the archive promised, when the client does not mind
        plan.append((item, path, stored, target))
    boundary = uuid.uuid4().hex
    base = base_url(request)
    # The first transcode runs before the answer starts: a single instance that cannot be decoded is a 406.
    first: bytes | None = None
    item0, path0, stored0, target0 = plan[0]
    if target0 != stored0:
        try:
            first = await run_in_threadpool(transcode.transcode, path0, target0)
        except transcode.TranscodeError as exc:
            raise HTTPException(406, f"{item0.sop_uid}: cannot convert {stored0} to {target0}: {exc}") from exc
    media_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    if len(plan) == 1:
        # One instance (what viewers ask most): one read in one thread hop and one answer with a
        # Content-Length, sent in one write; only a file over _WHOLE_FILE bytes is streamed.
        data = first if first is not None else await _read_instance(path0)
        if data is not None:
            location = f"{base}/studies/{item0.study_uid}/series/{item0.series_uid}/instances/{item0.sop_uid}"
            head = (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={target0}\r\n"
                    f"Content-Location: {location}\r\n\r\n").encode()
            ctx.metrics.instances_sent.labels("yes" if first is not None else "no").inc()
            _audit_retrieval(ctx, principal, request, items, transferred=True)
            return Response(b"".join((head, data, f"\r\n--{boundary}--\r\n".encode())), media_type=media_type)

    async def body() -> AsyncIterator[bytes]:
        nonlocal first
        for item, path, stored, target in plan:
            location = f"{base}/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}"
            head = (f"--{boundary}\r\nContent-Type: application/dicom; transfer-syntax={target}\r\n"
                    f"Content-Location: {location}\r\n\r\n").encode()
            if target == stored:
                data = await _read_instance(path)
                ctx.metrics.instances_sent.labels("no").inc()
                if data is None:  # a large file: in chunks of CHUNK bytes
                    yield head
                    async for chunk in _file_chunks(path):
                        yield chunk
                    yield b"\r\n"
                    continue
            else:
                try:
                    data = first if first is not None else await run_in_threadpool(transcode.transcode, path, target)
                    first = None
                except transcode.TranscodeError as exc:
                    log.error("transcoding %s to %s failed mid-response: %s", item.sop_uid, target, exc)
                    raise
                ctx.metrics.instances_sent.labels("yes").inc()
            yield b"".join((head, data, b"\r\n"))  # one write per part
        yield f"--{boundary}--\r\n".encode()

    _audit_retrieval(ctx, principal, request, items, transferred=True)
    return StreamingResponse(body(), media_type=media_type)


def _accepts_anything(ranges: Sequence[transcode.MediaRange]) -> bool:
    return any(m.transfer_syntax == "*" or m.media_type == "*/*" for m in ranges)


# --------------------------------------------------------------------------- metadata


def build_metadata(path: Path, item: StoredInstance) -> bytes:
    """One instance's DICOM JSON (header only; bulk data as relative BulkDataURIs)."""
    ds = transcode.read(path, stop_before_pixels=True)
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
    _audit_retrieval(ctx, principal, request, items, transferred=False)
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


__all__ = ["CHUNK", "build_metadata", "lookup", "retrieve", "routes"]
