"""The general header reader: pydicom, for every file the fast reader declines.

pydicom copes with what real archives contain besides clean Part 10 files:
raw datasets without preamble or file meta (implicit or explicit VR, either
byte order), deflated datasets, a file meta without (0002,0010) or in the
wrong VR, a transfer syntax that lies about the encoding, unknown VRs,
sequences switching to implicit VR. This module asks it for the top-level
elements *unconverted* (:class:`~pydicom.dataelem.RawDataElement`) and hands
their bytes over exactly as the fast reader does, so both end in the same
decoding code.

pydicom reads a short value or a partial element header at the end of a file
without complaint; a :class:`_Watch` passed as its ``stop_when`` callback sees
every top-level element header, stops at Pixel Data (as
``stop_before_pixels`` does, so pixels are never read) and lets this module
report a file that ends inside an element as
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
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from dicomflow.extract.raw import (
    ENCODING_TS,
    PIXEL_TAGS,
    SPECIFIC_CHARACTER_SET,
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


class _Watch:
    """pydicom ``stop_when`` callback: stop at Pixel Data, remember where the last element ends.

    Called with the file positioned at the element's value, for each
    top-level element of the dataset (not the file meta, not nested items).
    """

    def __init__(self, fp: BinaryIO, size: int) -> None:
        self.fp = fp
        self.size = size
        self.seen = False
        #: End offset of the last top-level element (None: undefined length).
        self.end: int | None = None
        self.at_pixels = False
        self.problem: str | None = None

    def __call__(self, tag: BaseTag, vr: str | None, length: int) -> bool:
        value_at = self.fp.tell()
        if tag in PIXEL_TAGS:
            self.at_pixels = True
            if length != UNDEFINED and value_at + length > self.size:
                self.problem = f"Pixel Data needs {length} bytes at byte {value_at}; the file has {self.size - value_at}"
            return True
        self.seen = True
        self.end = value_at + length if length != UNDEFINED else None
        return False


def read_header(path: str) -> RawHeader:
    """Read the wanted attributes of ``path`` with pydicom.

    Raises:
        NotDicomError: no DICOM prefix and no plausible dataset start.
        TruncatedError: the file ends inside an element.
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
    watch = _Watch(fp, size)
    ds = read_partial(fp, stop_when=watch, force=force)
    elements = [ds.get_item(tag, keep_deferred=True) for tag in sorted(ds.keys())]
    implicit, little = _encoding(ds, elements)
    meta_ts = ds.file_meta.get_item(TRANSFER_SYNTAX_UID) if ds.file_meta else None
    ts_text = meta_ts.value if meta_ts is not None else None
    if isinstance(ts_text, bytes):
        ts_text = ts_text.decode("latin-1")
    transfer_syntax = (ts_text or "").strip(" \x00") or ENCODING_TS[(implicit, little)]
    if transfer_syntax != DEFLATED_VR_LE:  # else pydicom read an inflated copy, not fp
        _check_complete(watch, fp)
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
    return header


def _check_complete(watch: _Watch, fp: BinaryIO) -> None:
    """Raise if the file ends inside Pixel Data or inside the header of an element.

    pydicom stops quietly on a partial element header; then the file is
    longer than the end of the last element it saw.
    """
    if watch.problem is not None:
        raise TruncatedError(watch.problem)
    if watch.at_pixels or fp.tell() != watch.size:
        return
    end = watch.end if watch.seen else _meta_end(fp)
    if end is not None and end < watch.size:
        raise TruncatedError(f"file ends inside the element header at byte {end}")


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
    if isinstance(elem, RawDataElement):
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


def _meta_end(fp: BinaryIO) -> int:
    """Where the file meta group ends (0 without a DICM prefix): the dataset's first byte."""
    fp.seek(128)
    if fp.read(4) != b"DICM":
        return 0
    pos = 132
    while len(head := fp.read(8)) == 8:
        group, _, vr, length = struct.unpack("<HH2sH", head)
        if group != 0x0002:
            break
        if vr in _LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                break
            length = struct.unpack("<I", extra)[0]
            pos += 4
        pos += 8 + length
        fp.seek(pos)
    return pos
