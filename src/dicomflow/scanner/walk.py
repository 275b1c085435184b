"""Find DICOM files in folders by their content, not their names.

Archives hold DICOM files named ``IM000001``, ``1.2.3.4``, ``image.DCM`` or
nothing at all, next to DICOMDIRs, reports and thumbnails. A file is DICOM
when its bytes say so:

- a 128-byte preamble followed by ``DICM`` (the PS3.10 file format); or
- a plausible raw data set start, as older writers and some exports produce:
  the first element is in group 0002 (meta without preamble) or 0008,
  encoded explicit VR little endian, explicit VR big endian, or implicit VR
  little endian with a length that fits in the file.

Hidden files (``.name``), which include the receiver's temporary files, are
not looked at.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dicomflow.receiver.part10 import ALL_VRS, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, PREFIX

#: How a DICOM file is laid out; None when the file is not DICOM.
Layout = Literal["part10", "meta-no-preamble", "raw"]
#: Bytes :func:`sniff` needs to decide.
SNIFF_BYTES = 132
_PLAUSIBLE_GROUPS = (0x0002, 0x0008)
_LE = struct.Struct("<HH")
_BE = struct.Struct(">HH")
_UL = struct.Struct("<I")


@dataclass(frozen=True)
class Sniffed:
    """What the first bytes of a file say: its layout and, for raw data sets, the encoding."""

    layout: Layout
    #: For a raw data set (no meta information): the transfer syntax its encoding implies.
    transfer_syntax_uid: str | None = None


def sniff(head: bytes, size: int) -> Sniffed | None:
    """Decide from the first bytes (at least :data:`SNIFF_BYTES` when the file has them) whether it is DICOM.

    ``size`` is the file's size, to judge an implicit VR length.
    """
    if len(head) >= SNIFF_BYTES and head[128:132] == PREFIX:
        return Sniffed("part10")
    if len(head) < 8:
        return None
    group, _ = _LE.unpack_from(head)
    if group in _PLAUSIBLE_GROUPS and head[4:6] in ALL_VRS:
        return Sniffed("meta-no-preamble") if group == 0x0002 else Sniffed("raw", EXPLICIT_VR_LE)
    if group == 0x0008:
        (length,) = _UL.unpack_from(head, 4)
        if length <= size - 8:
            return Sniffed("raw", IMPLICIT_VR_LE)
        return None
    group_be, _ = _BE.unpack_from(head)
    if group_be == 0x0008 and head[4:6] in ALL_VRS:
        return Sniffed("raw", EXPLICIT_VR_BE)
    return None


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under ``paths`` (files as given, folders recursively, sorted), hidden ones skipped.

    Symbolic links to files are followed; links to folders are not (no
    cycles). A path that does not exist is yielded as is, so the caller
    reports it.
    """
    for path in paths:
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(folder) / name
        else:
            yield path


__all__ = ["SNIFF_BYTES", "Layout", "Sniffed", "iter_files", "sniff"]
