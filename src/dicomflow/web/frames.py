"""WADO-RS frames and bulk data (PS3.18 §10.4): ``…/frames/{list}`` and ``…/bulkdata/{tag path}``.

Frames are answered as ``application/octet-stream`` (native little-endian
pixels, decoded when stored compressed) or in the compressed media type as
stored (``image/jpeg``, ``image/jp2``, ``image/jls``, ``image/x-dicom-rle``),
as the Accept header allows; 406 when neither is acceptable or the pixels
cannot be decoded. Bulk data is one element's value, named by the tag path
the metadata's BulkDataURI gave.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.dicom.constants import EXPLICIT_VR_BE, EXPLICIT_VR_LE
from dicomflow.imaging.transcode import FRAME_MEDIA, read
from dicomflow.web.context import WebContext
from dicomflow.web.negotiation import MediaRange, parse_accept
from dicomflow.web.retrieval import audit_retrieval, lookup, served_file


def _element(path: Path, tag_path: str) -> bytes:
    ds = read(path)
    parts = tag_path.strip("/").split("/")
    node = ds
    try:
        for i in range(0, len(parts) - 1, 2):
            node = node[int(parts[i], 16)].value[int(parts[i + 1])]
        value = node[int(parts[-1], 16)].value
    except (KeyError, IndexError, ValueError) as exc:
        raise HTTPException(404, f"no bulk data at {tag_path}") from exc
    if not isinstance(value, (bytes, bytearray)):
        raise HTTPException(404, f"{tag_path} is not bulk data")
    return bytes(value)


def _multipart(parts: Sequence[tuple[bytes, str]]) -> Response:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for data, media in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode())
        chunks.append(data)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    inner = parts[0][1].split(";")[0] if parts else "application/octet-stream"
    return Response(b"".join(chunks), media_type=f'multipart/related; type="{inner}"; boundary={boundary}')


async def bulkdata(ctx: WebContext, request: Request) -> Response:
    """GET …/instances/{instance}/bulkdata/{tag path}: one element's value as application/octet-stream."""
    principal = await ctx.principal(request, "read")
    items = await lookup(ctx, principal, request, level="instance")
    path = ctx.resolve(items[0].file_path)
    data = await run_in_threadpool(_element, path, request.path_params["tags"])
    audit_retrieval(ctx, principal, request, items, transferred=False)
    return _multipart([(data, "application/octet-stream")])


def _frame_numbers(text: str) -> list[int]:
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError as exc:
        raise HTTPException(400, f"frame list {text!r} is not comma-separated numbers") from exc
    if not numbers or any(n < 1 for n in numbers):
        raise HTTPException(400, "frame numbers start at 1")
    return numbers


def read_frames(path: Path, numbers: Sequence[int], ranges: Sequence[MediaRange]) -> list[tuple[bytes, str]]:
    """The frames as (bytes, part media type): compressed as stored when acceptable, else native pixels.

    Raises:
        HTTPException: 404 for a frame that does not exist, 406 when no acceptable form can be made.
    """
    import numpy as np
    from pydicom.encaps import generate_frames
    from pydicom.pixels.utils import pixel_array

    ds = read(path)
    if "PixelData" not in ds:
        raise HTTPException(404, "the instance has no pixel data")
    ts = str(ds.file_meta.TransferSyntaxUID)
    count = int(ds.get("NumberOfFrames", 1) or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise HTTPException(404, f"frame(s) {missing} do not exist (the instance has {count})")
    compressed_media = FRAME_MEDIA.get(ts)
    # application/octet-stream is uncompressed pixels whatever its transfer-syntax parameter says.
    as_stored = compressed_media is not None and any(
        m.media_type in (compressed_media, "*/*", "image/*") and m.transfer_syntax in (None, "*", ts) for m in ranges)
    native_ok = any(m.media_type in ("application/octet-stream", "*/*", "application/*") for m in ranges)
    if as_stored and compressed_media is not None:
        frames = list(generate_frames(ds.PixelData, number_of_frames=count))
        return [(frames[n - 1], f"{compressed_media}; transfer-syntax={ts}") for n in numbers]
    if not native_ok:
        raise HTTPException(406, f"frames are stored as {ts}; this server sends them as stored "
                                 f"({compressed_media or 'application/octet-stream'}) or as application/octet-stream")
    media = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    if compressed_media is None and ts != EXPLICIT_VR_BE and int(ds.BitsAllocated) % 8 == 0:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        data = ds.PixelData
        return [(bytes(data[(n - 1) * size:n * size]), media) for n in numbers]
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in numbers:
            try:
                arr = pixel_array(ds, index=n - 1)
            except Exception as exc:
                raise HTTPException(406, f"frame {n} cannot be decoded: {type(exc).__name__}: {exc}") from exc
            out.append((np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes(), media))
    return out


async def frames(ctx: WebContext, request: Request) -> Response:
    """GET …/instances/{instance}/frames/{list}."""
    principal = await ctx.principal(request, "read")
    numbers = _frame_numbers(request.path_params["frames"])
    items = await lookup(ctx, principal, request, level="instance")
    path, _ = served_file(ctx, items[0])
    ranges = parse_accept(request.headers.get("accept"))
    parts = await run_in_threadpool(read_frames, path, numbers, ranges)
    audit_retrieval(ctx, principal, request, items, transferred=False)
    return _multipart(parts)


def routes(ctx: WebContext) -> list[BaseRoute]:
    """The frames and bulk data routes."""

    async def bulk(request: Request) -> Response:
        return await bulkdata(ctx, request)

    async def frame(request: Request) -> Response:
        return await frames(ctx, request)

    i = "/studies/{study}/series/{series}/instances/{instance}"
    return [
        Route(i + "/bulkdata/{tags:path}", bulk, methods=["GET"]),
        Route(i + "/frames/{frames}", frame, methods=["GET"]),
    ]


__all__ = ["bulkdata", "frames", "read_frames", "routes"]
