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


__all__ = ["MediaRange", "NotAcceptable", "choose_syntax", "parse_accept"]
