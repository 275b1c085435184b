"""The fast header reader: a specialised Part 10 parser for the files archives hold.

Why: pydicom builds a full :class:`~pydicom.dataset.Dataset` (an object per
element, tag dictionary look-ups, sequence parsing) even with
``stop_before_pixels``, which costs about a millisecond on a CT header. This
reader walks the element headers with precompiled :mod:`struct` formats over
one buffered read, keeps only the bytes of the attributes in
:data:`~dicomflow.extract.raw.WANTED`, and skips everything else by its length.

It handles the common case and nothing else: a 128-byte preamble and
``DICM``, file meta information in explicit VR little endian, then a dataset
in implicit VR little endian, explicit VR little endian (including every
encapsulated transfer syntax) or explicit VR big endian, with sequences of
defined or undefined length. Anything unusual raises :class:`Unsupported`, and
the caller hands the file to the general reader
(:mod:`dicomflow.extract.general`), which is pydicom with all its tolerance:
no preamble or file meta, deflated datasets, a meta that lies about the
encoding, unknown VRs, elements out of tag order.

What it does check, because the pipeline must not index a broken file: every
defined length must fit in the file (including the Pixel Data element's, whose
header is read but whose value never is); a file that ends inside an element is
:class:`~dicomflow.extract.raw.TruncatedError`. Reading stops at the Pixel Data
element like pydicom's ``stop_before_pixels``; the only pixel bytes that can
enter memory are those sharing the last read block with the header
(:data:`BLOCK` bytes at most).
"""

from __future__ import annotations

import os
import struct
from typing import Any, Final

from dicomflow.extract.raw import (
    PIXEL_TAGS,
    TRANSFER_SYNTAX_UID,
    WANTED,
    RawHeader,
    TruncatedError,
)

#: Bytes read at a time. Most CT/MR headers fit in the first block.
BLOCK: Final = 8192
#: Nesting deeper than this is not a real file; let the general reader judge.
MAX_DEPTH: Final = 32

UNDEFINED: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_DELIMITER: Final = 0xFFFEE00D
SEQUENCE_DELIMITER: Final = 0xFFFEE0DD

IMPLICIT_VR_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"
DEFLATED_VR_LE: Final = "1.2.840.10008.1.2.1.99"

_LONG = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
_SHORT = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
)
#: VR bytes → (name, has a 4-byte length after 2 reserved bytes).
_VRS: Final[dict[bytes, tuple[str, bool]]] = {
    **{vr.encode(): (vr, True) for vr in _LONG},
    **{vr.encode(): (vr, False) for vr in _SHORT},
}

_LONG_BYTES: Final = frozenset(vr.encode() for vr in _LONG)
_SHORT_BYTES: Final = frozenset(vr.encode() for vr in _SHORT)
_VR_NAMES: Final = {vr_bytes: info[0] for vr_bytes, info in _VRS.items()}
#: One set look-up decides whether an element needs more than skipping.
_INTERESTING: Final = WANTED | PIXEL_TAGS

_HEAD_LE = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit)
_HEAD_BE = struct.Struct(">HH2sH")
_IMPL_LE = struct.Struct("<HHI")  # group, element, 32-bit length (implicit; items)
_IMPL_BE = struct.Struct(">HHI")
_U32_LE = struct.Struct("<I")
_U32_BE = struct.Struct(">I")


class Unsupported(Exception):
    """This file needs the general reader; the message says why (for debug logs)."""


class _File:
    """A window of bytes over an open file, refilled by ``pread`` where the walk needs it.

    ``data`` holds the file bytes from offset ``base``. Skipped values are
    never read: the walk just moves its position past them.
    """

    __slots__ = ("base", "data", "fd", "size")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.base = 0
        self.data = os.pread(fd, BLOCK, 0)

    def at(self, pos: int, count: int) -> int:
        """Make ``count`` bytes at file offset ``pos`` available; return their index in ``data``.

        Raises:
            TruncatedError: the file ends before ``pos + count``.
        """
        index = pos - self.base
        if index >= 0 and index + count <= len(self.data):
            return index
        if pos + count > self.size:
            raise TruncatedError(f"file ends at byte {self.size}, inside the element at byte {pos}")
        self.data = os.pread(self.fd, max(BLOCK, count), pos)
        self.base = pos
        if len(self.data) < count:  # the file shrank under us
            raise TruncatedError(f"file ends inside the element at byte {pos}")
        return 0

    def unpack(self, layout: struct.Struct, pos: int) -> tuple[Any, ...]:
        """``layout`` unpacked at file offset ``pos`` (refilling first: never from a stale buffer)."""
        i = self.at(pos, layout.size)
        return layout.unpack_from(self.data, i)


def read_header(path: str) -> RawHeader:
    """Read the wanted attributes of ``path`` the fast way.

    Raises:
        Unsupported: the file is outside this reader's scope (use the general one).
        TruncatedError: the file ends inside an element.
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        f = _File(fd, os.fstat(fd).st_size)
        pos, transfer_syntax = _read_meta(f)
        implicit = transfer_syntax == IMPLICIT_VR_LE
        little = transfer_syntax != EXPLICIT_VR_BE
        _check_encoding(f, pos, implicit)
        header = RawHeader(transfer_syntax, little, f.size)
        _read_dataset(f, pos, implicit, little, header.elements)
        return header
    finally:
        os.close(fd)


def _read_meta(f: _File) -> tuple[int, str]:
    """Check the preamble and read the file meta group; return (dataset start, transfer syntax)."""
    data = f.data
    if len(data) < 132 or data[128:132] != b"DICM":
        raise Unsupported("no 128-byte preamble and DICM prefix")
    pos = 132
    transfer_syntax: bytes | None = None
    while pos + 8 <= f.size:
        group, element, vr_bytes, length = f.unpack(_HEAD_LE, pos)
        if group != 0x0002:
            break
        vr = _VRS.get(vr_bytes)
        if vr is None:
            raise Unsupported("file meta is not explicit VR")
        if vr[1]:
            length = f.unpack(_U32_LE, pos + 8)[0]
            pos += 12
        else:
            pos += 8
        if length == UNDEFINED:
            raise Unsupported("undefined length in the file meta")
        if (group << 16 | element) == TRANSFER_SYNTAX_UID:
            j = f.at(pos, length)
            transfer_syntax = f.data[j : j + length]
        elif pos + length > f.size:
            raise TruncatedError(f"file meta element at byte {pos} runs past the end of the file")
        pos += length
    if transfer_syntax is None:
        raise Unsupported("no transfer syntax in the file meta")
    uid = transfer_syntax.decode("latin-1").strip(" \x00")
    if not uid or uid == DEFLATED_VR_LE:
        raise Unsupported(f"transfer syntax {uid!r}")
    return pos, uid


def _check_encoding(f: _File, pos: int, implicit: bool) -> None:
    """Make sure the dataset is encoded as the transfer syntax says (writers do lie)."""
    if pos + 6 > f.size:
        return
    i = f.at(pos, 6)
    a, b = f.data[i + 4], f.data[i + 5]
    looks_explicit = 0x40 < a < 0x5B and 0x40 < b < 0x5B
    if looks_explicit == implicit:
        raise Unsupported("dataset encoding differs from the transfer syntax")


def _read_dataset(
    f: _File, pos: int, implicit: bool, little: bool, found: dict[int, tuple[str | None, bytes]]
) -> None:
    """Walk the top-level elements from ``pos`` to the pixel data or the end, keeping the wanted ones.

    The hot loop of the module: a CT header has a few hundred elements, most
    of them skipped, so everything it touches is a local and the common
    element costs one unpack, two set look-ups and a comparison.
    Elements are not required to be in tag order: like pydicom, the last of
    duplicated tags wins and the first pixel data tag ends the walk.
    """
    size = f.size
    if implicit:
        head = _IMPL_LE
    else:
        head = _HEAD_LE if little else _HEAD_BE
    unpack_head = head.unpack_from
    unpack_u32 = (_U32_LE if little else _U32_BE).unpack_from
    long_vrs, short_vrs, vr_names = _LONG_BYTES, _SHORT_BYTES, _VR_NAMES
    interesting = _INTERESTING
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
            if tag in PIXEL_TAGS:
                if length != UNDEFINED and start + length > size:
                    raise TruncatedError(
                        f"Pixel Data needs {length} bytes at byte {start}; the file has {size - start}"
                    )
                return
            if length == UNDEFINED:
                raise Unsupported(f"wanted element {tag:08X} has undefined length")
            end = start + length
            if end > size:
                raise TruncatedError(_past_end(group, element, length, start, size))
            j = start - base
            if j < 0 or j + length > end_of_data:
                j = f.at(start, length)
                data, base, end_of_data = f.data, f.base, len(f.data)
            found[tag] = (None if implicit else vr_names[vr_bytes], data[j : j + length])
            pos = end
        elif length == UNDEFINED:
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


def _header(f: _File, pos: int, implicit: bool, little: bool) -> tuple[int, str | None, int, int]:
    """One element header in a nested dataset: (tag, VR, length, value offset)."""
    if implicit:
        group, element, length = f.unpack(_IMPL_LE if little else _IMPL_BE, pos)
        return group << 16 | element, None, length, pos + 8
    group, element, vr_bytes, length = f.unpack(_HEAD_LE if little else _HEAD_BE, pos)
    tag = group << 16 | element
    if group == 0xFFFE:  # item and delimiters carry no VR, in any transfer syntax
        length = f.unpack(_U32_LE if little else _U32_BE, pos + 4)[0]
        return tag, None, length, pos + 8
    info = _VRS.get(vr_bytes)
    if info is None:
        raise Unsupported(f"unknown VR {vr_bytes!r} in a sequence at byte {pos}")
    if info[1]:
        length = f.unpack(_U32_LE if little else _U32_BE, pos + 8)[0]
        return tag, info[0], length, pos + 12
    return tag, info[0], length, pos + 8


def _skip_sequence(f: _File, pos: int, implicit: bool, little: bool, depth: int) -> int:
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
        if length == UNDEFINED:
            pos = _skip_item(f, pos + 8, implicit, little, depth)
        else:
            pos += 8 + length
            if pos > f.size:
                raise TruncatedError(f"sequence item runs past the end of the file at byte {pos - length}")


def _skip_item(f: _File, pos: int, implicit: bool, little: bool, depth: int) -> int:
    """Skip an undefined-length item's elements; return the offset after its delimiter."""
    first = True
    while True:
        if first and not implicit:
            i = f.at(pos, 6)
            a, b = f.data[i + 4], f.data[i + 5]
            if not (0x40 < a < 0x5B and 0x40 < b < 0x5B) and f.data[i : i + 4] != (
                b"\xfe\xff\x0d\xe0" if little else b"\xff\xfe\xe0\x0d"
            ):
                raise Unsupported(f"implicit VR item inside explicit VR data at byte {pos}")
        first = False
        tag, vr, length, start = _header(f, pos, implicit, little)
        if tag == ITEM_DELIMITER:
            return start
        if length == UNDEFINED:
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
