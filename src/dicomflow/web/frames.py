"""WADO-RS frames and bulk data (PS3.18 §10.4): ``…/frames/{list}`` and ``…/bulkdata/{tag path}``.

Frames are answered in one of two forms, as the Accept header allows (its
ranges in q order; 406 naming what was asked and what is offered when
neither form is acceptable or the pixels cannot be decoded):

- *as stored*: a compressed frame's bytes as they are in the file, labelled
  ``{media type}; transfer-syntax={stored syntax}``. Asked for by the stored
  syntax's media type (``image/jpeg``, ``image/jp2``, ``image/jls``,
  ``image/x-dicom-rle``; also ``image/*`` and ``*/*``) without a
  ``transfer-syntax`` or with the stored one, and by
  ``application/octet-stream; transfer-syntax=*`` (or the stored syntax):
  the Accept of OHIF's image loader,
  ``multipart/related; type="application/octet-stream"; transfer-syntax=*``,
  which reads each part's ``transfer-syntax`` and decodes it in the browser.
  Such a part is labelled ``application/octet-stream; transfer-syntax=…``, and
  any encapsulated syntax qualifies (HTJ2K too), video excepted;
- *native*: little-endian pixels, decoded when stored compressed, labelled
  ``application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1``: asked for
  by ``application/octet-stream`` without ``transfer-syntax``, with ``*`` or
  with Explicit VR Little Endian (an uncompressed instance's frames are
  always native; ``*`` never makes this server compress).

Bulk data is one element's value, named by the tag path the metadata's
BulkDataURI gave, sent as ``application/octet-stream`` (406 for an Accept
that takes no such part).

Both read through the storage layer (:func:`~dicomflow.web.blobio.open_source`:
the local file, or ranged reads on ``s3``). A frame is found from the header:
pydicom parses it up to the Pixel Data element (one ranged read for a
typical header), then only the frame's bytes are read: native pixels at
``value start + (n - 1) × frame size``, an encapsulated frame through its
Basic (or Extended) Offset Table (``pydicom.encaps.get_frame`` seeks; with
no table it walks the item headers). A frame to decode is read by
``pixel_array(file, index=...)``, which also reads that frame only. Deflated
and big-endian objects, which cannot be addressed by offset, are read whole.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, BinaryIO

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.blobs import BlobStore
from dicomflow.dicom.constants import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    NATIVE_SYNTAXES,
)
from dicomflow.imaging.transcode import FRAME_MEDIA, decodable, read
from dicomflow.web.blobio import Blob, open_source
from dicomflow.web.context import WebContext, blob_errors
from dicomflow.web.negotiation import MediaRange, describe, parse_accept, require_or_406
from dicomflow.web.retrieval import audit_retrieval, lookup, served_file

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

#: The Pixel Data element's tag as it starts the element in a little-endian file.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"


def _element(source: BinaryIO, tag_path: str) -> bytes:
    ds = read(source)
    parts = tag_path.strip("/").split("/")
    node = ds
    try:
        for i in range(0, len(parts) - 1, 2):
            node = node[int(parts[i], 16)].value[int(parts[i + 1])]
        value = node[int(parts[-1], 16)].value
    # TypeError / AttributeError: a path that walks into an element that is not a sequence (7FE00010/1/2)
    except (KeyError, IndexError, ValueError, TypeError, AttributeError) as exc:
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
    require_or_406(request.headers.get("accept"), ("application/octet-stream",), "bulk data")
    items = await lookup(ctx, principal, request, level="instance")
    blob = ctx.locate(items[0].file_path)
    with blob_errors(items[0].file_path):
        data = await run_in_threadpool(_with_source, ctx.store, blob, _element, request.path_params["tags"])
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


def _with_source(store: BlobStore, blob: Blob, fn: Any, *args: Any) -> Any:
    with open_source(store, blob) as source:
        return fn(source, *args)


def read_frames(source: BinaryIO, numbers: Sequence[int], ranges: Sequence[MediaRange]) -> list[tuple[bytes, str]]:
    """The frames as (bytes, part media type): compressed as stored when acceptable, else native pixels.

    ``source`` is a seekable file of the instance at offset 0; only the header and the frames are read.

    Raises:
        HTTPException: 404 for a frame that does not exist, 406 when no acceptable form can be made.
    """
    header = read(source, stop_before_pixels=True)
    pixel_at = source.tell()  # pydicom stops at the start of the Pixel Data element
    ts = str(header.file_meta.TransferSyntaxUID)
    if ts in (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE):
        source.seek(0)
        return _whole_frames(read(source), numbers, ranges)
    if source.read(4) != _PIXEL_DATA_TAG:
        raise HTTPException(404, "the instance has no pixel data")
    value_at = pixel_at + (8 if ts == IMPLICIT_VR_LE else 12)
    count = _count(header, numbers)
    stored_media, native_ok = _forms(ts, ranges)
    if stored_media is not None:
        from pydicom.encaps import get_frame

        extended = None
        if "ExtendedOffsetTable" in header and "ExtendedOffsetTableLengths" in header:
            extended = (bytes(header.ExtendedOffsetTable), bytes(header.ExtendedOffsetTableLengths))
        out = []
        for n in numbers:
            source.seek(value_at)
            out.append((get_frame(source, n - 1, extended_offsets=extended, number_of_frames=count),
                        f"{stored_media}; transfer-syntax={ts}"))
        return out
    _refuse_unless(native_ok, ts, ranges)
    media = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    if ts in NATIVE_SYNTAXES and int(header.BitsAllocated) % 8 == 0:
        size = _frame_size(header)
        out = []
        for n in numbers:
            source.seek(value_at + (n - 1) * size)
            out.append((source.read(size), media))
        return out
    return [(_decoded(source, n), media) for n in numbers]


def _count(header: Dataset, numbers: Sequence[int]) -> int:
    count = int(header.get("NumberOfFrames", 1) or 1)
    missing = [n for n in numbers if n > count]
    if missing:
        raise HTTPException(404, f"frame(s) {missing} do not exist (the instance has {count})")
    return count


def _frame_by_frame(ts: str) -> bool:
    """An encapsulated syntax whose items are frames (a video's stream is not cut into frames here)."""
    return ts not in NATIVE_SYNTAXES and not ts.startswith("1.2.840.10008.1.2.4.10")


def _forms(ts: str, ranges: Sequence[MediaRange]) -> tuple[str | None, bool]:
    """(the part media type to send the frames as stored with, or None: not as stored; native pixels acceptable).

    The first range (q order) that takes the stored form decides its label; see the module's docstring.
    """
    compressed_media = FRAME_MEDIA.get(ts)
    stored_media = None
    if _frame_by_frame(ts):
        for m in ranges:
            if m.media_type == "application/octet-stream" and m.transfer_syntax in ("*", ts):
                stored_media = m.media_type
                break
            if compressed_media is not None and m.media_type in (compressed_media, "*/*", "image/*") \
                    and m.transfer_syntax in (None, "*", ts):
                stored_media = compressed_media
                break
    native_ok = any(m.media_type in ("application/octet-stream", "*/*", "application/*")
                    and m.transfer_syntax in (None, "*", EXPLICIT_VR_LE) for m in ranges)
    return stored_media, native_ok


def _offers(ts: str) -> list[str]:
    """What the frames of an instance stored as ``ts`` can be sent as, for a 406's reason."""
    out = []
    if _frame_by_frame(ts):
        out += [f"{m}; transfer-syntax={ts}" for m in (FRAME_MEDIA.get(ts), "application/octet-stream") if m]
    if decodable(ts):
        out.append(f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}")
    return out


def _refuse_unless(native_ok: bool, ts: str, ranges: Sequence[MediaRange]) -> None:
    if not native_ok:
        raise HTTPException(406, f"the Accept header asks for {describe(ranges)}; the frames of this instance "
                                 f"(stored as {ts}) are offered as {', '.join(_offers(ts)) or 'nothing'}")


def _frame_size(ds: Dataset) -> int:
    return int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8


def _decoded(source: BinaryIO | Dataset, n: int) -> bytes:
    """Frame ``n`` decoded to native little-endian pixels (from a file: that frame's bytes only)."""
    import numpy as np
    from pydicom.pixels.utils import pixel_array

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if not hasattr(source, "file_meta"):
                source.seek(0)
            arr = pixel_array(source, index=n - 1)
        except Exception as exc:
            raise HTTPException(406, f"frame {n} cannot be decoded: {type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()


def _whole_frames(ds: Dataset, numbers: Sequence[int], ranges: Sequence[MediaRange]) -> list[tuple[bytes, str]]:
    """Frames of a dataset read whole (deflated or big endian: not addressable by offset)."""
    if "PixelData" not in ds:
        raise HTTPException(404, "the instance has no pixel data")
    ts = str(ds.file_meta.TransferSyntaxUID)
    _count(ds, numbers)
    _refuse_unless(_forms(ts, ranges)[1], ts, ranges)
    media = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"
    if ts != EXPLICIT_VR_BE and int(ds.BitsAllocated) % 8 == 0:
        size = _frame_size(ds)
        return [(bytes(ds.PixelData[(n - 1) * size:n * size]), media) for n in numbers]
    return [(_decoded(ds, n), media) for n in numbers]


async def frames(ctx: WebContext, request: Request) -> Response:
    """GET …/instances/{instance}/frames/{list}."""
    principal = await ctx.principal(request, "read")
    numbers = _frame_numbers(request.path_params["frames"])
    items = await lookup(ctx, principal, request, level="instance")
    blob, _ = await served_file(ctx, items[0])
    ranges = parse_accept(request.headers.get("accept"))
    with blob_errors(ctx.store.location(blob.key)):
        parts = await run_in_threadpool(_with_source, ctx.store, blob, read_frames, numbers, ranges)
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
