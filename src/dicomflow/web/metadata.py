"""WADO-RS metadata (PS3.18 §10.4.1.1.2): DICOM JSON of a study's, a series' or an instance's headers.

Each instance's document is built from its header only (no pixel data; on
``s3`` from ranged reads of the header), cached on local disk
(:mod:`dicomflow.web.cache`), and a study or series is served as one JSON
array; a cold series' headers are read :data:`_METADATA_CONCURRENCY` at a
time. A study's or series' whole answer is cached too, keyed by its
instances (see :class:`~dicomflow.web.cache.MetadataCache`).
"""

from __future__ import annotations

import asyncio
import gzip
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dicomflow.blobs import BlobStore
from dicomflow.imaging.transcode import Source, read
from dicomflow.store.freshness import Marker, change_marker
from dicomflow.store.queries import StoredInstance
from dicomflow.web import dicomjson
from dicomflow.web.auth import Principal
from dicomflow.web.blobio import Blob, open_source
from dicomflow.web.cache import MetadataAnswer, MetadataCache
from dicomflow.web.context import WebContext, base_url, blob_errors, check_uid
from dicomflow.web.retrieval import audit_retrieval, lookup

#: Header reads (cold cache) in flight at once for one request.
_METADATA_CONCURRENCY = 32
#: Instances of a metadata answer gathered per chunk (one thread hop for their cached documents).
_METADATA_WINDOW = 1000
#: gzip level of a kept answer for clients that accept gzip (0: never compressed). See docs/dicomweb.md.
GZIP_LEVEL = 1
_MEDIA_TYPE = "application/dicom+json"
T = TypeVar("T")
_json = msgspec.json.Encoder(enc_hook=str)  # pydicom values are str / int subclasses (UID, IS, DSfloat)


async def bounded(calls: Sequence[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Every call's result in order, at most ``limit`` in flight (the first error cancels the rest)."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await call()

    tasks = [asyncio.ensure_future(one(c)) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for t in tasks:
            t.cancel()



def build_metadata(source: Source, item: StoredInstance) -> bytes:
    """One instance's DICOM JSON (header only; bulk data as relative BulkDataURIs)."""
    ds = read(source, stop_before_pixels=True)
    prefix = f"/studies/{item.study_uid}/series/{item.series_uid}/instances/{item.sop_uid}/bulkdata/"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = dicomjson.dataset_json(ds, lambda tag_path: prefix + tag_path, pixel_data="Rows" in ds)
    return _json.encode(doc)


def _header_metadata(store: BlobStore, blob: Blob, item: StoredInstance) -> bytes:
    """:func:`build_metadata` from the object's header only (ranged reads on s3)."""
    with open_source(store, blob) as source:
        return build_metadata(source, item)


async def _build_document(ctx: WebContext, cache: MetadataCache, where: Path | None, item: StoredInstance) -> bytes:
    """One instance's document built from its header (ranged reads on s3) and cached."""
    blob = ctx.locate(item.file_path)
    with blob_errors(item.file_path):
        document = await run_in_threadpool(_header_metadata, ctx.store, blob, item)
    await run_in_threadpool(cache.put, where, document)
    ctx.metrics.metadata_cache.labels("built").inc()
    return document


async def _documents(ctx: WebContext, cache: MetadataCache, tenant: str, items: Sequence[StoredInstance]) -> list[bytes]:
    """The instances' documents: the cached ones read in one thread hop, the others built concurrently.

    At most :data:`_METADATA_CONCURRENCY` headers are read at once (a cold series on s3 costs about
    ``instances / concurrency`` round trips, not ``instances``).
    """
    where = [cache.path(tenant, i.study_uid, i.series_uid, i.sop_uid, i.trace_id) for i in items]
    found = await run_in_threadpool(lambda: [cache.get(w) for w in where])
    missing = [n for n, doc in enumerate(found) if doc is None]
    if len(missing) < len(items):
        ctx.metrics.metadata_cache.labels("hit").inc(len(items) - len(missing))

    def build(n: int) -> Callable[[], Awaitable[bytes]]:
        return lambda: _build_document(ctx, cache, where[n], items[n])

    for n, document in zip(missing, await bounded([build(n) for n in missing], _METADATA_CONCURRENCY), strict=True):
        found[n] = document
    return [d for d in found if d is not None]


def accepts_gzip(request: Request) -> bool:
    """True when the client's Accept-Encoding names gzip (or ``*``) with a non-zero q."""
    for token in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = token.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            q = params.strip().lower()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.", "0.0", "0.00", "0.000"))
    return False


AnswerKey = tuple[str, str, str | None, str]


async def _remembered(ctx: WebContext, principal: Principal, request: Request,
                      level: str) -> tuple[AnswerKey, Marker, MetadataAnswer | None]:
    """The key and the current change marker of a study or series answer, and the kept answer if still valid."""
    p = request.path_params
    study = check_uid(p["study"], "StudyInstanceUID")
    series = check_uid(p["series"], "SeriesInstanceUID") if level == "series" else None
    async with ctx.db.connection() as conn:
        marker = await change_marker(conn, principal.tenant, study, series)
    key: AnswerKey = (principal.tenant, study, series, base_url(request))
    kept = ctx.answers.get(key)
    return key, marker, kept if kept is not None and kept.marker == marker else None


async def _send(ctx: WebContext, request: Request, key: AnswerKey, answer: MetadataAnswer) -> Response:
    """The answer as it is, or gzipped (once, then kept) for a client that accepts gzip."""
    if GZIP_LEVEL and accepts_gzip(request):
        if answer.gzipped is None:
            answer.gzipped = await run_in_threadpool(gzip.compress, answer.body, GZIP_LEVEL, mtime=0)
            ctx.answers.put(key, answer)  # charged with its gzip now
        return Response(answer.gzipped, media_type=_MEDIA_TYPE,
                        headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"})
    return Response(answer.body, media_type=_MEDIA_TYPE, headers={"Vary": "Accept-Encoding"} if GZIP_LEVEL else None)


async def instance_documents(ctx: WebContext, tenant: str, items: Sequence[StoredInstance]) -> list[bytes]:
    """The instances' DICOM JSON documents (cached or built), BulkDataURIs relative (the change feed's Metadata)."""
    return await _documents(ctx, MetadataCache(ctx.storage_root), tenant, items)


async def metadata(ctx: WebContext, request: Request, level: str) -> Response:
    """GET …/metadata: a JSON array of the instances' DICOM JSON.

    A study's or series' answer is kept in memory while its change marker
    stays (:mod:`dicomflow.web.cache`): a warm request is one marker query.
    Otherwise built in windows of :data:`_METADATA_WINDOW` instances, each sent as one chunk (memory stays
    bounded for a large study); the first window before answering, so a broken or missing object is an error
    status, not a cut body.
    """
    principal = await ctx.principal(request, "read")
    key = marker = None
    if level != "instance":
        key, marker, kept = await _remembered(ctx, principal, request, level)
        if kept is not None:
            ctx.metrics.metadata_cache.labels("hit").inc(len(kept.items))
            audit_retrieval(ctx, principal, request, kept.items, transferred=False)
            return await _send(ctx, request, key, kept)
    items = await lookup(ctx, principal, request, level=level)
    cache = MetadataCache(ctx.storage_root)
    base = base_url(request)

    async def window(start: int) -> bytes:
        documents = await _documents(ctx, cache, principal.tenant, items[start:start + _METADATA_WINDOW])
        return b",".join(documents)

    whole = None
    if len(items) <= _METADATA_WINDOW and level != "instance":
        whole = cache.answer_path(principal.tenant, items[0].study_uid, items[0].series_uid if level == "series"
                                  else None, ((i.sop_uid, i.trace_id) for i in items))
    answer = await run_in_threadpool(cache.get, whole) if whole is not None else None
    if answer is not None:
        ctx.metrics.metadata_cache.labels("hit").inc(len(items))
    else:
        answer = await window(0)
        if whole is not None:
            await run_in_threadpool(cache.put_answer, whole, answer)
    audit_retrieval(ctx, principal, request, items, transferred=False)
    if len(items) <= _METADATA_WINDOW:
        body = b"[" + dicomjson.absolute_bulk_uris(answer, base) + b"]"
        if key is None or marker is None:
            return Response(body, media_type=_MEDIA_TYPE)
        kept = MetadataAnswer(marker, items, body)
        ctx.answers.put(key, kept)
        return await _send(ctx, request, key, kept)
    first = answer

    async def body_chunks() -> AsyncIterator[bytes]:
        yield b"[" + dicomjson.absolute_bulk_uris(first, base)
        for start in range(_METADATA_WINDOW, len(items), _METADATA_WINDOW):
            yield b"," + dicomjson.absolute_bulk_uris(await window(start), base)
        yield b"]"

    return StreamingResponse(body_chunks(), media_type=_MEDIA_TYPE)


__all__ = ["accepts_gzip", "bounded", "build_metadata", "instance_documents", "metadata"]
