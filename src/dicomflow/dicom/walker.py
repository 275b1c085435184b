"""The one element walker: top-level elements of a data set, from a file or from bytes in memory.

Why: pydicom builds a full :class:`~pydicom.dataset.Dataset` (an object per
element, tag dictionary look-ups, sequence parsing) even with
``stop_before_pixels``, which costs about a millisecond on a CT header. This
walker jumps from element header to element header with precompiled
:mod:`struct` formats, keeps only the bytes of the wanted attributes, skips
everything else by its length (sequences and items of defined or undefined
length included) and stops at the first Pixel Data tag: a few hundred
nanoseconds per element. The consumer runs it over stored files (``pread``
into a small window: skipped values are never read), the receiver over the
data set of a C-STORE, the folder publisher over a memory-mapped file.

It handles the common case and nothing else: Part 10 files (128-byte
preamble and ``DICM``, file meta in explicit VR little endian) or a bare data
set in a known transfer syntax, encoded in implicit VR little endian,
explicit VR little endian (every encapsulated syntax included) or explicit
VR big endian. Anything unusual raises :class:`~dicomflow.dicom.exceptions.Unsupported`
and :mod:`dicomflow.dicom.reader` hands the bytes to pydicom
(:mod:`dicomflow.dicom.general`): no preamble, deflated data sets, a meta
that lies about the encoding, unknown VRs.

What it does check, because the pipeline must not index a broken file: every
defined length must fit in the data (including the Pixel Data element's,
whose header is read but whose value never is); data that ends inside an
element is :class:`~dicomflow.dicom.exceptions.TruncatedError`, naming the
element and the byte offsets.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Final

from dicomflow.dicom.constants import (
    ITEM,
    ITEM_DELIMITER,
    LONG_VRS,
    PIXEL_TAGS,
    PREFIX,
    SEQUENCE_DELIMITER,
    SHORT_VRS,
    UNDEFINED_LENGTH,
    VR_NAMES,
    WANTED,
    transfer_syntax,
)
from dicomflow.dicom.exceptions import TruncatedError, Unsupported
from dicomflow.dicom.part10 import META_START, Buffer, read_file_meta

#: Bytes read at a time from a file. Most CT/MR headers fit in the first block.
BLOCK: Final = 8192
#: Nesting deeper than this is not a real file; let the general reader judge.
MAX_DEPTH: Final = 32
#: A file meta group larger than this is not a real one.
_MAX_META: Final = 1 << 24

_HEAD_LE = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit)
_HEAD_BE = struct.Struct(">HH2sH")
_IMPL_LE = struct.Struct("<HHI")  # group, element, 32-bit length (implicit; items)
_IMPL_BE = struct.Struct(">HHI")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")
_ITEM_END_LE: Final = b"\xfe\xff\x0d\xe0"
_ITEM_END_BE: Final = b"\xff\xfe\xe0\x0d"

#: wanted set → wanted | PIXEL_TAGS: one set look-up decides whether an element needs more than skipping.
_interesting: dict[frozenset[int], frozenset[int]] = {WANTED: WANTED | PIXEL_TAGS}


@dataclass(slots=True)
class RawHeader:
    """The undecoded header of one file or data set, as the walker (or pydicom) found it.

    ``elements`` maps a wanted tag to ``(vr, value)``: the VR as written
    (``None`` under implicit VR, where the dictionary VR applies) and the raw
    value bytes, padding included. ``transfer_syntax_uid`` is (0002,0010)
    when the file has it, else the one its encoding shows. ``file_size`` is
    the size of the file (or buffer) read.
    """

    transfer_syntax_uid: str
    little_endian: bool
    file_size: int
    elements: dict[int, tuple[str | None, bytes]] = field(default_factory=dict)


class _Window:
    """A window of bytes over a file (refilled by ``pread`` where the walk needs it) or over a buffer.

    ``data`` holds the bytes from offset ``base``. Skipped values are never
    read: the walk just moves its position past them. Over a buffer the
    window is the whole buffer and never moves.
    """

    __slots__ = ("base", "data", "fd", "size")

    def __init__(self, data: Buffer, size: int, fd: int | None) -> None:
        self.fd = fd
        self.size = size
        self.base = 0
        self.data: Buffer = data

    @classmethod
    def of_file(cls, fd: int) -> _Window:
        return cls(os.pread(fd, BLOCK, 0), os.fstat(fd).st_size, fd)

    @classmethod
    def of_buffer(cls, buf: Buffer) -> _Window:
        return cls(buf, len(buf), None)

    def at(self, pos: int, count: int) -> int:
        """Make ``count`` bytes at offset ``pos`` available; return their index in ``data``.

        Raises:
            TruncatedError: the data ends before ``pos + count``.
        """
        index = pos - self.base
        if index >= 0 and index + count <= len(self.data):
            return index
        if pos + count > self.size or self.fd is None:
            raise TruncatedError(f"file ends at byte {self.size}, inside the element at byte {pos}")
        self.data = os.pread(self.fd, max(BLOCK, count), pos)
        self.base = pos
        if len(self.data) < count:  # the file shrank under us
            raise TruncatedError(f"file ends inside the element at byte {pos}")
        return 0

    def unpack(self, layout: struct.Struct, pos: int) -> tuple[Any, ...]:
        """``layout`` unpacked at offset ``pos`` (refilling first: never from a stale buffer)."""
        i = self.at(pos, layout.size)
        return layout.unpack_from(self.data, i)


# --------------------------------------------------------------------------- entry points


def read_file(path: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """The wanted top-level attributes of the Part 10 file at ``path``.

    Raises:
        Unsupported: the file is outside the walker's scope (use the general reader).
        TruncatedError: the file ends inside an element.
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_part10(_Window.of_file(fd), wanted)
    finally:
        os.close(fd)


def read_part10(buf: Buffer, wanted: frozenset[int] = WANTED) -> RawHeader:
    """:func:`read_file` over the bytes of a whole Part 10 file in memory (or memory-mapped)."""
    return _finish(_read_part10(_Window.of_buffer(buf), wanted), buf)


def read_dataset(
    buf: Buffer, transfer_syntax_uid: str, *, offset: int = 0, wanted: frozenset[int] = WANTED
) -> RawHeader:
    """The wanted top-level attributes of a bare data set encoded in ``transfer_syntax_uid``, from ``offset``.

    Raises:
        Unsupported: a deflated data set, or an encoding the walker does not follow.
        TruncatedError: the data ends inside an element.
    """
    syntax = transfer_syntax(transfer_syntax_uid)
    if syntax.deflated:
        raise Unsupported(f"transfer syntax {transfer_syntax_uid!r}")
    window = _Window.of_buffer(buf)
    _check_encoding(window, offset, syntax.implicit)
    header = RawHeader(transfer_syntax_uid, syntax.little, window.size)
    walk(window, offset, syntax.implicit, syntax.little, header.elements, wanted)
    return _finish(header, buf)


def read_elements(buf: Buffer, wanted: frozenset[int], *, implicit: bool = True, little: bool = True) -> RawHeader:
    """The wanted elements of a short encoded group taken as it is (a DIMSE command set: implicit VR LE).

    No transfer-syntax checks: the caller knows the encoding.

    Raises:
        TruncatedError: an element runs past the end of ``buf``.
        Unsupported: an encoding the walker does not follow.
    """
    header = RawHeader("", little, len(buf))
    walk(_Window.of_buffer(buf), 0, implicit, little, header.elements, wanted)
    return _finish(header, buf)


def _finish(header: RawHeader, buf: Buffer) -> RawHeader:
    """Values sliced from a memoryview or bytearray are views: make them bytes."""
    if not isinstance(buf, (bytes, mmap.mmap)):
        header.elements = {tag: (vr, bytes(value)) for tag, (vr, value) in header.elements.items()}
    return header


def _read_part10(f: _Window, wanted: frozenset[int]) -> RawHeader:
    pos, uid = _read_meta(f)
    syntax = transfer_syntax(uid)
    if syntax.deflated:
        raise Unsupported(f"transfer syntax {uid!r}")
    _check_encoding(f, pos, syntax.implicit)
    header = RawHeader(uid, syntax.little, f.size)
    walk(f, pos, syntax.implicit, syntax.little, header.elements, wanted)
    return header


def _read_meta(f: _Window) -> tuple[int, str]:
    """Check the preamble and read the file meta group; return (data set start, transfer syntax)."""
    if f.size < META_START or f.at(0, META_START) != 0 or f.data[META_START - 4:META_START] != PREFIX:
        raise Unsupported("no 128-byte preamble and DICM prefix")
    limit = len(f.data)
    while True:
        try:
            meta, pos = read_file_meta(f.data, META_START)
        except TruncatedError:
            if limit >= f.size:
                raise
        except ValueError as why:
            raise Unsupported(str(why)) from why
        else:
            if pos + 8 <= limit or limit >= f.size:
                return pos, meta.transfer_syntax_uid
        # The meta group may go on past the window: read more of the file from its start.
        limit = min(f.size, limit * 8)
        if limit > _MAX_META or f.fd is None:
            raise Unsupported("file meta information too large")
        f.data, f.base = os.pread(f.fd, limit, 0), 0


def _check_encoding(f: _Window, pos: int, implicit: bool) -> None:
    """Make sure the data set is encoded as the transfer syntax says (writers do lie)."""
    if pos + 6 > f.size:
        return
    i = f.at(pos, 6)
    a, b = f.data[i + 4], f.data[i + 5]
    looks_explicit = 0x40 < a < 0x5B and 0x40 < b < 0x5B
    if looks_explicit == implicit:
        raise Unsupported("data set encoding differs from the transfer syntax")


def walk(
    f: _Window, pos: int, implicit: bool, little: bool, found: dict[int, tuple[str | None, bytes]],
    wanted: frozenset[int] = WANTED,
) -> None:
    """Walk the top-level elements from ``pos`` to the pixel data or the end, keeping the wanted ones.

    The hot loop of the package: a CT header has a few hundred elements,
    most of them skipped, so everything it touches is a local and the
    common element costs one unpack, two set look-ups and a comparison.
    Elements are not required to be in tag order: like pydicom, the last of
    duplicated tags wins and the first pixel data tag ends the walk.

    Raises:
        TruncatedError: the data ends inside an element (offsets in the message).
        Unsupported: an encoding the walker does not follow.
    """
    interesting = _interesting.get(wanted)
    if interesting is None:
        interesting = _interesting.setdefault(wanted, wanted | PIXEL_TAGS)
    size = f.size
    if implicit:
        head = _IMPL_LE if little else _IMPL_BE
    else:
        head = _HEAD_LE if little else _HEAD_BE
    unpack_head = head.unpack_from
    unpack_u32 = (_U32_LE if little else _U32_BE).unpack_from
    long_vrs, short_vrs, vr_names, pixel_tags = LONG_VRS, SHORT_VRS, VR_NAMES, PIXEL_TAGS
    data, base = f.data, f.base
    end_of_data = len(data)
    vr_bytes = b""
    while pos + 8 <= size:
        i = pos - base
        if i < 0 or i + 12 > end_of_data:
            i = f.at(pos, min(12, size - pos))
            data, base, end_of_data = f.data, f.base, len(f.data)
        if implicit:
            group, element, length = unpack_head(data, i)
            start = pos + 8
        else:
            group, element, vr_bytes, length = unpack_head(data, i)
            if vr_bytes in long_vrs:
                if i + 12 > end_of_data:
                    raise TruncatedError(f"file ends inside the element header at byte {pos}")
                length = unpack_u32(data, i + 8)[0]
                start = pos + 12
            elif vr_bytes in short_vrs:
                start = pos + 8
            else:
                raise Unsupported(f"unknown VR {vr_bytes!r} at byte {pos}")
        tag = group << 16 | element
        if tag in interesting:
            if tag in pixel_tags:
                if length != UNDEFINED_LENGTH and start + length > size:
                    raise TruncatedError(
                        f"Pixel Data needs {length} bytes at byte {start}; the file has {size - start}"
                    )
                return
            if length == UNDEFINED_LENGTH:
                raise Unsupported(f"wanted element {tag:08X} has undefined length")
            end = start + length
            if end > size:
                raise TruncatedError(_past_end(group, element, length, start, size))
            j = start - base
            if j < 0 or j + length > end_of_data:
                j = f.at(start, length)
                data, base, end_of_data = f.data, f.base, len(f.data)
            found[tag] = (None if implicit else vr_names[vr_bytes], data[j : j + length])  # type: ignore[assignment]
            pos = end
        elif length == UNDEFINED_LENGTH:
            if implicit or vr_bytes == b"SQ":
                pos = _skip_sequence(f, start, implicit, little, 1)
            elif vr_bytes == b"UN":  # PS3.5 6.2.2: the content is implicit VR little endian
                pos = _skip_sequence(f, start, True, True, 1)
            else:
                raise Unsupported(f"undefined length with VR {vr_bytes!r} at byte {pos}")
            data, base, end_of_data = f.data, f.base, len(f.data)
        else:
            pos = start + length
            if pos > size:
                raise TruncatedError(_past_end(group, element, length, start, size))
    if pos < size:
        raise TruncatedError(f"file ends inside the element header at byte {pos}")


def _past_end(group: int, element: int, length: int, start: int, size: int) -> str:
    return f"element ({group:04X},{element:04X}) needs {length} bytes at byte {start}; the file has {size - start}"


def _header(f: _Window, pos: int, implicit: bool, little: bool) -> tuple[int, str | None, int, int]:
    """One element header in a nested data set: (tag, VR, length, value offset)."""
    if implicit:
        group, element, length = f.unpack(_IMPL_LE if little else _IMPL_BE, pos)
        return group << 16 | element, None, length, pos + 8
    group, element, vr_bytes, length = f.unpack(_HEAD_LE if little else _HEAD_BE, pos)
    tag = group << 16 | element
    if group == 0xFFFE:  # item and delimiters carry no VR, in any transfer syntax
        length = f.unpack(_U32_LE if little else _U32_BE, pos + 4)[0]
        return tag, None, length, pos + 8
    vr = VR_NAMES.get(vr_bytes)
    if vr is None:
        raise Unsupported(f"unknown VR {vr_bytes!r} in a sequence at byte {pos}")
    if vr_bytes in LONG_VRS:
        length = f.unpack(_U32_LE if little else _U32_BE, pos + 8)[0]
        return tag, vr, length, pos + 12
    return tag, vr, length, pos + 8


def _skip_sequence(f: _Window, pos: int, implicit: bool, little: bool, depth: int) -> int:
    """Skip an undefined-length sequence's items; return the offset after its delimiter."""
    if depth > MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    tag_format = _IMPL_LE if little else _IMPL_BE  # items: tag + 32-bit length, no VR
    while True:
        group, element, length = f.unpack(tag_format, pos)
        tag = group << 16 | element
        if tag == SEQUENCE_DELIMITER:
            return pos + 8
        if tag != ITEM:
            raise Unsupported(f"({group:04X},{element:04X}) where a sequence item belongs, at byte {pos}")
        if length == UNDEFINED_LENGTH:
            pos = _skip_item(f, pos + 8, implicit, little, depth)
        else:
            pos += 8 + length
            if pos > f.size:
                raise TruncatedError(f"sequence item runs past the end of the file at byte {pos - length}")


def _skip_item(f: _Window, pos: int, implicit: bool, little: bool, depth: int) -> int:
    """Skip an undefined-length item's elements; return the offset after its delimiter."""
    first = True
    while True:
        if first and not implicit:
            i = f.at(pos, 6)
            a, b = f.data[i + 4], f.data[i + 5]
            if not (0x40 < a < 0x5B and 0x40 < b < 0x5B) and f.data[i : i + 4] != (
                _ITEM_END_LE if little else _ITEM_END_BE
            ):
                raise Unsupported(f"implicit VR item inside explicit VR data at byte {pos}")
        first = False
        tag, vr, length, start = _header(f, pos, implicit, little)
        if tag == ITEM_DELIMITER:
            return start
        if length == UNDEFINED_LENGTH:
            if vr is None or vr == "SQ":
                pos = _skip_sequence(f, start, implicit, little, depth + 1)
            elif vr == "UN":
                pos = _skip_sequence(f, start, True, True, depth + 1)
            else:
                raise Unsupported(f"undefined length with VR {vr} at byte {pos}")
            continue
        pos = start + length
        if pos > f.size:
            raise TruncatedError(f"element at byte {start - 8} runs past the end of the file")


__all__ = ["BLOCK", "MAX_DEPTH", "RawHeader", "read_dataset", "read_elements", "read_file", "read_part10", "walk"]
