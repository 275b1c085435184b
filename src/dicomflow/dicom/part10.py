"""The DICOM file format (PS3.10): preamble, prefix, File Meta Information, and telling DICOM from not.

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
from typing import Literal, TypeAlias

from dicomflow.dicom.constants import (
    ALL_VRS,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    FILE_META_GROUP,
    IMPLICIT_VR_LE,
    LONG_VRS,
    PREAMBLE_LENGTH,
    PREFIX,
    UNDEFINED_LENGTH,
)
from dicomflow.dicom.exceptions import TruncatedError

#: Anything the readers and writers take: bytes, or a view of them (a memory-mapped file).
Buffer: TypeAlias = bytes | bytearray | memoryview | mmap.mmap

PREAMBLE = b"\x00" * PREAMBLE_LENGTH
#: Where a Part 10 file's meta group starts.
META_START = PREAMBLE_LENGTH + len(PREFIX)
#: Our implementation class UID (2.25 = UUID-derived root) and version name.
IMPLEMENTATION_CLASS_UID = "2.25.184712634720963102739981093765437122571"
IMPLEMENTATION_VERSION = "DICOMFLOW_01"

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
        TruncatedError: a meta element runs past the end of ``buf`` (a
            :class:`ValueError` too).
        ValueError: the group is not explicit VR, has an undefined length or
            has no Transfer Syntax UID.
    """
    values: dict[int, bytes] = {}
    pos, end = offset, len(buf)
    while pos + 8 <= end:
        group, elem, vr, short_length = _HEADER_SHORT.unpack_from(buf, pos)
        if group != FILE_META_GROUP:
            break
        if vr not in ALL_VRS:
            raise ValueError(f"meta element (0002,{elem:04X}) at byte {pos} is not explicit VR")
        if vr in LONG_VRS:
            if pos + 12 > end:
                raise TruncatedError(f"truncated file meta information at byte {pos}")
            length = _UL.unpack_from(buf, pos + 8)[0]
            pos += 12
        else:
            length = short_length
            pos += 8
        if length == UNDEFINED_LENGTH:
            raise ValueError(f"meta element (0002,{elem:04X}) at byte {pos} has an undefined length")
        if pos + length > end:
            raise TruncatedError(f"meta element (0002,{elem:04X}) at byte {pos} runs past the end of the file")
        values[elem] = bytes(buf[pos:pos + length])
        pos += length
    ts = values.get(0x0010)
    if not ts or not _ui(ts):
        raise ValueError("file meta information has no transfer syntax UID")
    meta = FileMeta(
        transfer_syntax_uid=_ui(ts),
        media_storage_sop_class_uid=_ui(values[0x0002]) if 0x0002 in values else None,
        media_storage_sop_instance_uid=_ui(values[0x0003]) if 0x0003 in values else None,
    )
    return meta, pos


# --------------------------------------------------------------------------- telling DICOM from not

#: How a DICOM file is laid out; None when the file is not DICOM.
Layout = Literal["part10", "meta-no-preamble", "raw"]
#: Bytes :func:`sniff` needs to decide.
SNIFF_BYTES = META_START
_PLAUSIBLE_GROUPS = (0x0002, 0x0008)
_LE = struct.Struct("<HH")
_BE = struct.Struct(">HH")


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say: its layout and, for raw data sets, the encoding."""

    layout: Layout
    #: For a raw data set (no meta information): the transfer syntax its encoding implies.
    transfer_syntax_uid: str | None = None


def sniff(head: bytes, size: int) -> Sniffed | None:
    """Decide from the first bytes (at least :data:`SNIFF_BYTES` when the file has them) whether it is DICOM.

    DICOM is a 128-byte preamble followed by ``DICM``, or a plausible raw
    data set start: a first element in group 0002 (meta without preamble)
    or 0008, explicit VR little endian, explicit VR big endian, or implicit
    VR little endian with a length that fits in the file. ``size`` is the
    file's size, to judge an implicit VR length.
    """
    if len(head) >= SNIFF_BYTES and head[PREAMBLE_LENGTH:META_START] == PREFIX:
        return Sniffed("part10")
    if len(head) < 8:
        return None
    group, _ = _LE.unpack_from(head)
    if group in _PLAUSIBLE_GROUPS and head[4:6] in ALL_VRS:
        return Sniffed("meta-no-preamble") if group == FILE_META_GROUP else Sniffed("raw", EXPLICIT_VR_LE)
    if group == 0x0008:
        (length,) = _UL.unpack_from(head, 4)
        if length <= size - 8:
            return Sniffed("raw", IMPLICIT_VR_LE)
        return None
    group_be, _ = _BE.unpack_from(head)
    if group_be == 0x0008 and head[4:6] in ALL_VRS:
        return Sniffed("raw", EXPLICIT_VR_BE)
    return None


def looks_like_dataset(start: bytes) -> bool:
    """A raw data set (no preamble) starts with a group 0002 or 0008 element, in either byte order."""
    if len(start) < 8:
        return False
    return _LE.unpack_from(start)[0] in _PLAUSIBLE_GROUPS or _BE.unpack_from(start)[0] in _PLAUSIBLE_GROUPS


__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION",
    "META_START",
    "PREAMBLE",
    "PREFIX",
    "SNIFF_BYTES",
    "Buffer",
    "FileMeta",
    "Layout",
    "Sniffed",
    "encode_file_meta",
    "file_header",
    "looks_like_dataset",
    "read_file_meta",
    "sniff",
]
