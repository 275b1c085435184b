"""The DICOM file format (PS3.10): preamble, prefix and File Meta Information.

A C-STORE carries only the data set, already encoded in the negotiated
transfer syntax. Writing it to disk needs nothing more than a 128-byte
preamble, ``DICM`` and a small File Meta Information group in front of those
bytes: the data set itself is never decoded and re-encoded (that would cost
more than everything else the receiver does).

The meta group is always Explicit VR Little Endian and tiny, so it is encoded
and read here with :mod:`struct` directly rather than through pydicom
datasets, which are slower by two orders of magnitude for this job.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from typing import TypeAlias

#: Anything the readers and writers take: bytes, or a view of them (a memory-mapped file).
Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

PREAMBLE = b"\x00" * 128
PREFIX = b"DICM"
#: Our implementation class UID (2.25 = UUID-derived root) and version name.
IMPLEMENTATION_CLASS_UID = "2.25.184712634720963102739981093765437122571"
IMPLEMENTATION_VERSION = "DICOMFLOW_01"

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_LE = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"

#: Explicit-VR value representations with a 2-byte reserved field and a 4-byte length.
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
#: Every value representation of PS3.5 (to tell explicit from implicit VR encoding).
ALL_VRS = LONG_VRS | frozenset({
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH",
    b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
})

_HEADER_SHORT = struct.Struct("<HH2sH")
_HEADER_LONG = struct.Struct("<HH2s2xI")
_UL = struct.Struct("<I")


@dataclass(frozen=True)
class FileMeta:
    """The File Meta Information elements dicomflow needs from a file."""

    transfer_syntax_uid: str
    media_storage_sop_class_uid: str | None = None
    media_storage_sop_instance_uid: str | None = None


def _element(group_elem: int, vr: bytes, value: bytes) -> bytes:
    """One Explicit VR Little Endian element, value padded to even length."""
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    group, elem = group_elem >> 16, group_elem & 0xFFFF
    if vr in LONG_VRS:
        return _HEADER_LONG.pack(group, elem, vr, len(value)) + value
    return _HEADER_SHORT.pack(group, elem, vr, len(value)) + value


def encode_file_meta(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str | None = None
) -> bytes:
    """The encoded File Meta Information group (0002,xxxx), group length first.

    The UIDs must already be validated (they are written verbatim). The
    Source Application Entity Title records who sent the instance.
    """
    elements: list[bytes] = [
        _element(0x00020001, b"OB", b"\x00\x01"),
        _element(0x00020002, b"UI", sop_class_uid.encode("ascii")),
        _element(0x00020003, b"UI", sop_instance_uid.encode("ascii")),
        _element(0x00020010, b"UI", transfer_syntax_uid.encode("ascii")),
        _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
        _element(0x00020013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
    ]
    ae = (source_ae or "").strip()
    if ae:
        elements.append(_element(0x00020016, b"AE", ae.encode("ascii", "replace")[:16]))
    body = b"".join(elements)
    return _element(0x00020000, b"UL", _UL.pack(len(body))) + body


def file_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae: str | None = None
) -> bytes:
    """Preamble, ``DICM`` and the meta group: everything that precedes the data set."""
    return PREAMBLE + PREFIX + encode_file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid, source_ae)


def _ui(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ")


def read_file_meta(buf: Buffer, offset: int) -> tuple[FileMeta, int]:
    """Read the meta group starting at ``offset``; return it and where the data set starts.

    Reads element by element while the group is 0002 (the group length is
    not trusted: some writers get it wrong).

    Raises:
        ValueError: the group is truncated, not explicit VR, or has no
            Transfer Syntax UID.
    """
    values: dict[int, bytes] = {}
    pos, end = offset, len(buf)
    while pos + 8 <= end:
        group, elem, vr, short_length = _HEADER_SHORT.unpack_from(buf, pos)
        if group != 0x0002:
            break
        if vr not in ALL_VRS:
            raise ValueError(f"meta element (0002,{elem:04X}) at byte {pos} is not explicit VR")
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise ValueError("truncated file meta information")
            length = _UL.unpack_from(buf, pos + 8)[0]
            pos += 12
        else:
            length = short_length
            pos += 8
        if pos + length > end:
            raise ValueError(f"meta element (0002,{elem:04X}) runs past the end of the file")
        values[elem] = bytes(buf[pos:pos + length])
        pos += length
    ts = values.get(0x0010)
    if not ts or not _ui(ts):
        raise ValueError("file meta information has no Transfer Syntax UID")
    meta = FileMeta(
        transfer_syntax_uid=_ui(ts),
        media_storage_sop_class_uid=_ui(values[0x0002]) if 0x0002 in values else None,
        media_storage_sop_instance_uid=_ui(values[0x0003]) if 0x0003 in values else None,
    )
    return meta, pos


__all__ = [
    "ALL_VRS",
    "Buffer",
    "DEFLATED_EXPLICIT_VR_LE",
    "EXPLICIT_VR_BE",
    "EXPLICIT_VR_LE",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "IMPLICIT_VR_LE",
    "LONG_VRS",
    "PREAMBLE",
    "PREFIX",
    "FileMeta",
    "encode_file_meta",
    "file_header",
    "read_file_meta",
]
