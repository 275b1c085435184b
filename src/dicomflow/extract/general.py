"""The general header reader: pydicom, for every file the fast reader declines.

pydicom copes with what real archives contain besides clean Part 10 files:
raw datasets without preamble or file meta (implicit or explicit VR, either
byte order), deflated datasets, a file meta without (0002,0010) or in the
wrong VR, a transfer syntax that lies about the encoding, unknown VRs,
sequences switching to implicit VR. This module asks it for the top-level
elements *unconverted* (:class:`~pydicom.dataelem.RawDataElement`) and hands
their bytes over exactly as the fast reader does, so both end in the same
decoding code.

Checks added on top of pydicom, which reads short values without complaint:
a top-level element whose value is shorter than its declared length, or a
Pixel Data element longer than what is left of the file, is a
:class:`~dicomflow.extract.raw.TruncatedError`.

pydicom emits Python warnings on odd files; they are caught here and logged
with the file path (the test suite turns any warning into an error, and a
worker process has nobody to show them to).
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from collections.abc import Sequence
from typing import BinaryIO

import pydicom

from pydicom.dataelem import DataElement, RawDataElement

from dicomflow.extract.raw import (
    ENCODING_TS,
    SPECIFIC_CHARACTER_SET,
    PIXEL_TAGS,
    TRANSFER_SYNTAX_UID,
    WANTED,
    RawHeader,
    TruncatedError,
)

_log = logging.getLogger(__name__)

UNDEFINED = 0xFFFFFFFF
DEFLATED_VR_LE = "1.2.840.10008.1.2.1.99"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


class NotDicomError(Exception):
    """The file is not DICOM at all (no DICM prefix, no dataset at its start)."""


def read_header(path: str) -> RawHeader:
    """Read the wanted attributes of ``path`` with pydicom.

    Raises:
        NotDicomError: no DICOM prefix and no plausible dataset start.
        TruncatedError: an element runs past the end of the file.
        OSError: the file cannot be opened or read.
        Exception: whatever pydicom raises on a file it cannot parse
            (the caller turns it into an :class:`~dicomflow.errors.ExtractError`).
    """
    with open(path, "rb") as fp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _read(fp, path)
        finally:
            for warning in caught:
                _log.warning("%s: %s", path, warning.message)


def _read(fp: BinaryIO, path: str) -> RawHeader:
    """The body of :func:`read_header`, run with warnings caught."""
    size = os.fstat(fp.fileno()).st_size
    start = fp.read(132)
    fp.seek(0)
    force = start[128:132] != b"DICM"
    if force and not _looks_like_dataset(start):
        raise NotDicomError("no DICM prefix and no DICOM dataset at the start of the file")
    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
    elements = [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]
    implicit, little = _encoding(ds, elements)
    meta_ts = ds.file_meta.get_item(TRANSFER_SYNTAX_UID) if ds.file_meta else None
    ts_text = meta_ts.value if meta_ts is not None else None
    if isinstance(ts_text, bytes):
        ts_text = ts_text.decode("latin-1")
    transfer_syntax = (ts_text or "").strip(" \x00") or ENCODING_TS[(implicit, little)]
    header = RawHeader(transfer_syntax, little, size)
    for elem in elements:
        length = getattr(elem, "length", UNDEFINED)
        value = getattr(elem, "value", None)
        if isinstance(value, bytes) and length != UNDEFINED and len(value) < length:
            raise TruncatedError(f"element {elem.tag} needs {length} bytes; the file has {len(value)} left")
        if elem.tag in WANTED:
            raw = _raw_value(elem)
            if raw is None:
                _log.warning("%s: %s was not read as raw bytes; ignored", path, elem.tag)
                continue
            header.elements[int(elem.tag)] = (elem.VR, raw)
    if transfer_syntax != DEFLATED_VR_LE:  # pydicom read an inflated copy; fp is elsewhere
        _check_pixel_data(fp, size, implicit, little)
    return header


def _encoding(ds: pydicom.Dataset, elements: Sequence[DataElement | RawDataElement]) -> tuple[bool, bool]:
    """(implicit VR, little endian) as the elements were really read.

    pydicom switches encoding when the dataset contradicts the transfer
    syntax but records the declared one in ``original_encoding``; each raw
    element knows how it was read.
    """
    for elem in reversed(elements):
        if isinstance(elem, RawDataElement):
            return elem.is_implicit_VR, elem.is_little_endian
    implicit, little = ds.original_encoding
    return (True if implicit is None else implicit), (True if little is None else little)


def _raw_value(elem: DataElement | RawDataElement) -> bytes | None:
    """The value bytes of a top-level element, as the fast reader would have them.

    pydicom stores an empty value as ``None`` and converts (0008,0005) while
    reading (it needs the character set); a converted Specific Character Set
    is rebuilt from its terms, which is all :func:`records.encodings_for` uses.
    """
    if getattr(elem, "is_raw", False):
        return elem.value if elem.value is not None else b""
    if elem.tag == SPECIFIC_CHARACTER_SET:
        value = elem.value
        terms = [value] if isinstance(value, str) else list(value or [])
        return "\\".join(terms).encode("latin-1", "replace")
    return None


def _looks_like_dataset(start: bytes) -> bool:
    """A raw dataset (no preamble) starts with a group 0002 or 0008 element, in either byte order."""
    if len(start) < 8:
        return False
    little = struct.unpack_from("<H", start)[0]
    big = struct.unpack_from(">H", start)[0]
    return little in (0x0002, 0x0008) or big in (0x0002, 0x0008)


def _check_pixel_data(fp: BinaryIO, size: int, implicit: bool, little: bool) -> None:
    """pydicom stops *at* the pixel data header: check its declared length fits in the file."""
    pos = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return
    order = "<" if little else ">"
    group, element = struct.unpack_from(order + "HH", head)
    if (group << 16 | element) not in PIXEL_TAGS:
        return
    if implicit:
        length, value_at = struct.unpack_from(order + "I", head, 4)[0], pos + 8
    elif head[4:6] in _LONG_VRS and len(head) == 12:
        length, value_at = struct.unpack_from(order + "I", head, 8)[0], pos + 12
    else:
        length, value_at = struct.unpack_from(order + "H", head, 6)[0], pos + 8
    if length != UNDEFINED and value_at + length > size:
        raise TruncatedError(
            f"Pixel Data needs {length} bytes at byte {value_at}; the file has {size - value_at}"
        )
