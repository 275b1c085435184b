"""Rendered and thumbnail resources (PS3.18 §10.4.1.1.3 and §10.7) as routes.

``…/rendered`` renders an instance or a frame at its own size, or the
``viewport``; ``…/thumbnail`` does the same fitted into ``viewport`` (128x128
by default). A multi-frame instance's ``…/rendered`` is its first frame, as
Orthanc, Google's and Azure's DICOM services answer it: this server sends no
multi-frame media type (no ``image/gif``, no video: 406), so of the two
answers a multi-frame instance may have it gives the first frame; every frame
is ``…/frames/{n}/rendered`` (1 to NumberOfFrames, 404 beyond). An instance's
``…/thumbnail`` is its middle frame (more telling for a cine loop). A series thumbnail is its middle
instance's (the image workers' pre-built ``thumbnail_location`` when there
is one), a study's is its first series'. Media type from the Accept header
or the ``accept`` parameter: ``image/jpeg`` (default) or ``image/png``.

Both read through the storage layer: the instance from a seekable file of
its object (:func:`~dicomflow.web.blobio.open_source`: ranged reads on
``s3``, the header and the rendered frame only), a pre-built thumbnail whole.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.blobs import BlobError, BlobStore
from dicomflow.imaging import render
from dicomflow.store.queries import StoredInstance
from dicomflow.web.blobio import Blob, open_source
from dicomflow.web.context import WebContext, blob_errors
from dicomflow.web.negotiation import describe, parse_accept
from dicomflow.web.retrieval import audit_retrieval, lookup, served_file


def _media_type(request: Request) -> render.Format:
    """JPEG or PNG, the first the ``accept`` parameter or the Accept header takes (406 naming both otherwise)."""
    header = request.query_params.get("accept") or request.headers.get("accept")
    for m in parse_accept(header):
        if m.media_type in ("image/jpeg", "image/*", "*/*"):
            return "image/jpeg"
        if m.media_type == "image/png":
            return "image/png"
    raise HTTPException(406, f"the Accept header asks for {describe(parse_accept(header))}; rendered images "
                             "are offered as image/jpeg, image/png (one frame; no multi-frame media types)")


def _pick(items: list[StoredInstance], level: str) -> StoredInstance:
    if level == "study":
        first_series = items[0].series_uid
        items = [i for i in items if i.series_uid == first_series]
    return items[len(items) // 2]


async def _prebuilt_thumbnail(ctx: WebContext, series: list[StoredInstance]) -> bytes | None:
    """The image workers' series thumbnail (JPEG, default size), when one is recorded and in the store."""
    for i in series:
        if i.thumbnail_location:
            try:
                blob = ctx.locate(i.thumbnail_location)
                return await run_in_threadpool(ctx.store.read, blob.key)
            except (HTTPException, BlobError):
                return None
    return None


def _render_blob(store: BlobStore, blob: Blob, options: render.RenderOptions) -> bytes:
    with open_source(store, blob) as source:
        return render.render(source, options)


async def _render(ctx: WebContext, request: Request, level: str, *, thumbnail: bool) -> Response:
    principal = await ctx.principal(request, "read")
    media_type = _media_type(request)
    # An instance's /rendered is its first frame (a multi-frame one's too: see the module's docstring).
    frame = 1 if level == "instance" and not thumbnail else None
    if "frame" in request.path_params:
        try:
            frame = int(request.path_params["frame"])
        except ValueError as exc:
            raise HTTPException(400, "the frame number is not an integer") from exc
        if frame < 1:
            raise HTTPException(400, "frame numbers start at 1")
    try:
        options = render.parse_options(dict(request.query_params), frame=frame, thumbnail=thumbnail,
                                       media_type=media_type)
    except render.RenderParameterError as exc:
        raise HTTPException(400, str(exc)) from exc
    items = await lookup(ctx, principal, request, level=level)
    item = _pick(items, level)
    if thumbnail and level != "instance" and options == render.RenderOptions(
            viewport=(render.THUMBNAIL_SIZE, render.THUMBNAIL_SIZE)):
        prebuilt = await _prebuilt_thumbnail(ctx, [i for i in items if i.series_uid == item.series_uid])
        if prebuilt is not None:
            audit_retrieval(ctx, principal, request, [item], transferred=False)
            return Response(prebuilt, media_type="image/jpeg")
    blob, _ = await served_file(ctx, item)
    try:
        with blob_errors(ctx.store.location(blob.key)):
            image = await run_in_threadpool(_render_blob, ctx.store, blob, options)
    except render.RenderError as exc:
        raise HTTPException(404 if "does not exist" in str(exc) or "no image" in str(exc) else 406, str(exc)) from exc
    audit_retrieval(ctx, principal, request, [item], transferred=False)
    return Response(image, media_type=media_type)


def routes(ctx: WebContext) -> list[BaseRoute]:
    def endpoint(level: str, thumbnail: bool) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            return await _render(ctx, request, level, thumbnail=thumbnail)
        return handle

    s, se = "/studies/{study}", "/studies/{study}/series/{series}"
    i = se + "/instances/{instance}"
    out: list[BaseRoute] = []
    for kind, thumb in (("rendered", False), ("thumbnail", True)):
        out += [
            Route(f"{se}/{kind}", endpoint("series", thumb), methods=["GET"]),
            Route(f"{i}/{kind}", endpoint("instance", thumb), methods=["GET"]),
            Route(f"{i}/frames/{{frame}}/{kind}", endpoint("instance", thumb), methods=["GET"]),
        ]
    out.append(Route(f"{s}/thumbnail", endpoint("study", True), methods=["GET"]))
    return out


__all__ = ["routes"]
