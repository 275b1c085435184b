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
from dicomflow.store.queries import StoredInstance
from dicomflow.web import dicomjson
from dicomflow.web.blobio import Blob, open_source
from dicomflow.web.cache import MetadataCache
from dicomflow.web.context import WebContext, base_url, blob_errors
from dicomflow.web.retrieval import audit_retrieval, lookup

#: Header reads (cold cache) in flight at once for one request.
_METADATA_CONCURRENCY = 32
#: Instances of a metadata answer gathered per chunk (one thread hop for their cached documents).
_METADATA_WINDOW = 1000
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


async def instance_documents(ctx: WebContext, tenant: str, items: Sequence[StoredInstance]) -> list[bytes]:
    """The instances' DICOM JSON documents (cached or built), BulkDataURIs relative (the change feed's Metadata)."""
    return await _documents(ctx, MetadataCache(ctx.storage_root), tenant, items)


async def metadata(ctx: WebContext, request: Request, level: str) -> Response:
    """GET …/metadata: a JSON array of the instances' DICOM JSON.

    Built in windows of :data:`_METADATA_WINDOW` instances, each sent as one chunk (memory stays bounded
    for a large study); the first window before answering, so a broken or missing object is an error
    status, not a cut body.
    """
    principal = await ctx.principal(request, "read")
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
        audit_retrieval(ctx, principal, request, items, transferred=False)
        return Response(b"[" + dicomjson.absolute_bulk_uris(answer, base) + b"]", media_type="application/dicom+json")
    first = await window(0)
    audit_retrieval(ctx, principal, request, items, transferred=False)
    if len(items) <= _METADATA_WINDOW:
        if whole is not None:
            await run_in_threadpool(cache.put_answer, whole, first)
        return Response(b"[" + dicomjson.absolute_bulk_uris(first, base) + b"]", media_type="application/dicom+json")

    async def body() -> AsyncIterator[bytes]:
        yield b"[" + dicomjson.absolute_bulk_uris(first, base)
        for start in range(_METADATA_WINDOW, len(items), _METADATA_WINDOW):
            yield b"," + dicomjson.absolute_bulk_uris(await window(start), base)
        yield b"]"

    return StreamingResponse(body(), media_type="application/dicom+json")



__all__ = ["bounded", "build_metadata", "instance_documents", "metadata"]
