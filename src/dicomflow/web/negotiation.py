"""Transfer syntax negotiation: the Accept header's media ranges and ``transfer-syntax=``.

Negotiation (PS3.18 §8.7.3): each media range of the Accept header may name a
``transfer-syntax``; ``*`` accepts any, and ``application/dicom`` without
one means Explicit VR Little Endian. The stored syntax wins when it is
acceptable (no work, byte-identical answer); otherwise the first acceptable
syntax this server can produce from it, in the client's q order. When none
can be produced the answer is 406 naming the syntaxes asked for and why.

Producing it is :mod:`dicomflow.imaging.transcode` (shared with the image
workers), which writes lossless syntaxes only: a lossy target is refused (406).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from dicomflow.dicom.constants import EXPLICIT_VR_LE
from dicomflow.errors import DicomflowError
from dicomflow.imaging.transcode import WRITABLE, decodable


class NotAcceptable(DicomflowError):
    """No acceptable representation can be produced (answered 406 with this reason)."""


@dataclass(frozen=True)
class MediaRange:
    """One entry of an Accept header: ``multipart/related; type="application/dicom"; transfer-syntax=*``."""

    media_type: str
    transfer_syntax: str | None
    q: float


_PARAM_RE = re.compile(r';\s*([A-Za-z0-9_-]+)\s*=\s*("[^"]*"|[^;,]*)')


def parse_accept(header: str | None) -> list[MediaRange]:
    """The Accept header's media ranges (inner ``type=`` of multipart/related unwrapped), best q first."""
    if not header or not header.strip():
        return [MediaRange("*/*", None, 1.0)]
    out: list[MediaRange] = []
    for part in re.split(r",(?=(?:[^\"]*\"[^\"]*\")*[^\"]*$)", header):
        part = part.strip()
        if not part:
            continue
        main = part.split(";", 1)[0].strip().lower()
        params = {k.lower(): v.strip().strip('"') for k, v in _PARAM_RE.findall(part)}
        media = params.get("type", "").lower() if main == "multipart/related" else main
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            q = 1.0
        out.append(MediaRange(media or "*/*", params.get("transfer-syntax"), q))
    out.sort(key=lambda m: -m.q)
    return [m for m in out if m.q > 0]


def describe(ranges: Sequence[MediaRange]) -> str:
    """The Accept header's ranges as a reader wants them in a 406's reason."""
    return ", ".join(m.media_type + (f"; transfer-syntax={m.transfer_syntax}" if m.transfer_syntax else "")
                     for m in ranges) or "nothing"


def accepts(ranges: Sequence[MediaRange], media_type: str) -> bool:
    """True when one of ``ranges`` takes ``media_type`` (exactly, ``type/*`` or ``*/*``)."""
    kind = media_type.split("/", 1)[0]
    return any(m.media_type in (media_type, f"{kind}/*", "*/*") for m in ranges)


def require(header: str | None, offered: Sequence[str], what: str) -> str:
    """The first of ``offered`` (media types, best first) that the Accept header takes.

    Raises:
        NotAcceptable: none is acceptable; the reason names what was asked and what ``what`` is offered as.
    """
    ranges = parse_accept(header)
    for media_type in offered:
        if accepts(ranges, media_type):
            return media_type
    raise NotAcceptable(f"the Accept header asks for {describe(ranges)}; {what} is offered as {', '.join(offered)}")


def require_or_406(header: str | None, offered: Sequence[str], what: str) -> str:
    """:func:`require`, its refusal as the HTTP 406 it is answered with (plain text: the reason)."""
    from starlette.exceptions import HTTPException

    try:
        return require(header, offered, what)
    except NotAcceptable as exc:
        raise HTTPException(406, str(exc)) from exc


def choose_syntax(stored: str, ranges: Sequence[MediaRange], *, has_pixels: bool) -> str:
    """The transfer syntax to send an instance stored as ``stored`` in, for these Accept ranges.

    Raises:
        NotAcceptable: no acceptable syntax can be produced; the reason names them.
    """
    wanted: list[str] = []
    for m in ranges:
        if m.media_type not in ("application/dicom", "*/*", "application/*"):
            continue
        ts = m.transfer_syntax or (EXPLICIT_VR_LE if m.media_type == "application/dicom" else "*")
        if ts == "*" or ts == stored:
            return stored
        wanted.append(ts)
    if not wanted:
        raise NotAcceptable("only application/dicom can be sent for an instance; the Accept header asks for "
                            + ", ".join(sorted({m.media_type for m in ranges})))
    for ts in wanted:
        if ts in WRITABLE and (not has_pixels or decodable(stored)):
            return ts
    why = (f"the stored syntax {stored} cannot be decoded here" if has_pixels and not decodable(stored)
           else f"this server writes only {', '.join(WRITABLE)} (lossless)")
    raise NotAcceptable(f"cannot send transfer syntax {', '.join(wanted)}: {why}")


__all__ = ["MediaRange", "NotAcceptable", "accepts", "choose_syntax", "describe", "parse_accept", "require",
           "require_or_406"]
