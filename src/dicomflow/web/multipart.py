"""An incremental ``multipart/related`` reader (RFC 2046 §5.1, RFC 2387) that spools each part to a file.

STOW-RS bodies are whole studies: they are never held in memory. The body
is fed chunk by chunk as it arrives; each part's bytes go straight to its
own file in a spool folder, and only a tail as long as the delimiter is
kept back between chunks (the delimiter may straddle two chunks). Part
headers are bounded (:data:`MAX_HEADER_BYTES`), so a peer cannot make the
server buffer without limit. The size limit on the whole body is the
caller's: it counts what it feeds.

Why not python-multipart: its parser targets ``multipart/form-data``
(Content-Disposition names); ``multipart/related`` parts carry only a
Content-Type, and the scanner below is the whole job.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

from dicomflow.errors import DicomflowError

#: Headers of one part, in bytes; more is refused as malformed.
MAX_HEADER_BYTES = 16 * 1024
#: Parts in one body; more is refused (each one costs a file and a Kafka round trip).
MAX_PARTS = 10000

_BOUNDARY_RE = re.compile(r'boundary\s*=\s*("([^"]{1,70})"|([^;\s,"]{1,70})(?![^;\s,]))', re.IGNORECASE)


class MultipartError(DicomflowError):
    """The body is not well-formed multipart (answered 400 with this reason)."""


@dataclass
class Part:
    """One spooled part: its headers (names lower-cased), its file and size."""

    headers: dict[str, str]
    path: Path
    size: int = 0

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def boundary_of(content_type: str) -> str:
    """The ``boundary`` parameter of a Content-Type header.

    Raises:
        MultipartError: there is none (or it is longer than RFC 2046's 70 characters).
    """
    match = _BOUNDARY_RE.search(content_type)
    if match is None:
        raise MultipartError("the Content-Type has no boundary parameter")
    return match.group(2) or match.group(3)


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("latin-1").split("\r\n"):
        if not line:
            continue
        if line[0] in " \t" and headers:  # folded continuation
            last = next(reversed(headers))
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MultipartError(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


@dataclass
class MultipartSpooler:
    """Feed body chunks; parts appear in :attr:`parts`, each written to ``folder/part-NNNNN``."""

    boundary: str
    folder: Path
    parts: list[Part] = field(default_factory=list)
    _state: Literal["preamble", "delimiter", "headers", "body", "done"] = "preamble"
    _buffer: bytearray = field(default_factory=bytearray)
    _file: BinaryIO | None = None

    def __post_init__(self) -> None:
        self._delimiter = b"--" + self.boundary.encode("latin-1")
        self._body_delimiter = b"\r\n" + self._delimiter

    @property
    def complete(self) -> bool:
        """True once the close delimiter (``--boundary--``) was read."""
        return self._state == "done"

    def feed(self, data: bytes) -> None:
        """Consume the next bytes of the body.

        Raises:
            MultipartError: the bytes cannot be multipart (bad header, too many parts ...).
            OSError: a part cannot be written to the spool folder.
        """
        if self._state == "done":
            return  # the epilogue is ignored (RFC 2046)
        self._buffer += data
        steps = {"preamble": self._preamble, "delimiter": self._after_delimiter, "headers": self._headers,
                 "body": self._body}
        while not self.complete and steps[self._state](self._buffer):
            pass

    # Each step consumes what it can of ``buf`` and returns True when the state moved on (go on with
    # the next step), False when it needs more bytes.

    def _preamble(self, buf: bytearray) -> bool:
        i = buf.find(self._delimiter)
        if i < 0:
            del buf[:max(0, len(buf) - len(self._delimiter) + 1)]
            return False
        del buf[:i + len(self._delimiter)]
        self._state = "delimiter"
        return True

    def _after_delimiter(self, buf: bytearray) -> bool:
        while buf and buf[0] in (0x20, 0x09):  # transport padding
            del buf[:1]
        if len(buf) < 2:
            return False
        if buf[:2] == b"--":
            self._state = "done"
            buf.clear()
            return False
        if buf[:2] != b"\r\n":
            raise MultipartError("a boundary delimiter is not followed by a line break")
        del buf[:2]
        self._state = "headers"
        return True

    def _headers(self, buf: bytearray) -> bool:
        if buf[:2] == b"\r\n":
            block, skip = b"", 2
        else:
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError(f"part headers longer than {MAX_HEADER_BYTES} bytes")
                return False
            block, skip = bytes(buf[:i]), i + 4
        if skip > MAX_HEADER_BYTES:
            raise MultipartError(f"part headers longer than {MAX_HEADER_BYTES} bytes")
        del buf[:skip]
        if len(self.parts) >= MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")
        part = Part(_parse_headers(block), self.folder / f"part-{len(self.parts) + 1:05d}")
        self.parts.append(part)
        self._file = part.path.open("wb")
        self._state = "body"
        return True

    def _body(self, buf: bytearray) -> bool:
        i = buf.find(self._body_delimiter)
        if i < 0:
            safe = len(buf) - len(self._body_delimiter) + 1
            if safe > 0:
                self._write(buf[:safe])
                del buf[:safe]
            return False
        self._write(buf[:i])
        del buf[:i + len(self._body_delimiter)]
        self._close_part()
        self._state = "delimiter"
        return True

    def _write(self, data: bytearray) -> None:
        assert self._file is not None
        self._file.write(data)
        self.parts[-1].size += len(data)

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def close(self) -> None:
        """Close the part being written (after the body ended or on error)."""
        self._close_part()


__all__ = ["MAX_HEADER_BYTES", "MAX_PARTS", "MultipartError", "MultipartSpooler", "Part", "boundary_of"]
