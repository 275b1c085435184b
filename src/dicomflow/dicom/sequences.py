"""Skipping nested data sets: sequences and items of undefined length, to their delimiters.

The element walker (:mod:`dicomflow.dicom.walker`) keeps only top-level
elements; a sequence of undefined length has no length to jump over, so its
items are walked here, element header by element header, and nothing in
them is kept. Implicit VR items inside explicit VR data, unknown VRs and
nesting deeper than :data:`MAX_DEPTH` are left to the general reader
(:class:`~dicomflow.dicom.exceptions.Unsupported`).
"""

from __future__ import annotations

from typing import Final

from dicomflow.dicom.constants import ITEM, ITEM_DELIMITER, LONG_VRS, SEQUENCE_DELIMITER, UNDEFINED_LENGTH, VR_NAMES
from dicomflow.dicom.exceptions import TruncatedError, Unsupported
from dicomflow.dicom.window import HEAD_BE, HEAD_LE, IMPL_BE, IMPL_LE, U32_BE, U32_LE, Window

#: Nesting deeper than this is not a real file; let the general reader judge.
MAX_DEPTH: Final = 32
_ITEM_END_LE: Final = b"\xfe\xff\x0d\xe0"
_ITEM_END_BE: Final = b"\xff\xfe\xe0\x0d"


def _header(f: Window, pos: int, implicit: bool, little: bool) -> tuple[int, str | None, int, int]:
    """One element header in a nested data set: (tag, VR, length, value offset)."""
    if implicit:
        group, element, length = f.unpack(IMPL_LE if little else IMPL_BE, pos)
        return group << 16 | element, None, length, pos + 8
    group, element, vr_bytes, length = f.unpack(HEAD_LE if little else HEAD_BE, pos)
    tag = group << 16 | element
    if group == 0xFFFE:  # item and delimiters carry no VR, in any transfer syntax
        length = f.unpack(U32_LE if little else U32_BE, pos + 4)[0]
        return tag, None, length, pos + 8
    vr = VR_NAMES.get(vr_bytes)
    if vr is None:
        raise Unsupported(f"unknown VR {vr_bytes!r} in a sequence at byte {pos}")
    if vr_bytes in LONG_VRS:
        length = f.unpack(U32_LE if little else U32_BE, pos + 8)[0]
        return tag, vr, length, pos + 12
    return tag, vr, length, pos + 8


def skip_sequence(f: Window, pos: int, implicit: bool, little: bool, depth: int) -> int:
    """Skip an undefined-length sequence's items; return the offset after its delimiter."""
    if depth > MAX_DEPTH:
        raise Unsupported("sequences nested too deep")
    tag_format = IMPL_LE if little else IMPL_BE  # items: tag + 32-bit length, no VR
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


def _skip_item(f: Window, pos: int, implicit: bool, little: bool, depth: int) -> int:
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
                pos = skip_sequence(f, start, implicit, little, depth + 1)
            elif vr == "UN":
                pos = skip_sequence(f, start, True, True, depth + 1)
            else:
                raise Unsupported(f"undefined length with VR {vr} at byte {pos}")
            continue
        pos = start + length
        if pos > f.size:
            raise TruncatedError(f"element at byte {start - 8} runs past the end of the file")


__all__ = ["MAX_DEPTH", "skip_sequence"]
