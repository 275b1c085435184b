"""The general header reader: pydicom, for everything the walker declines.

pydicom copes with what real archives contain besides clean Part 10 files:
raw data sets without preamble or file meta (implicit or explicit VR, either
byte order), deflated data sets, a file meta without (0002,0010) or in the
wrong VR, a transfer syntax that lies about the encoding, unknown VRs,
sequences switching to implicit VR. This module asks it for the top-level
elements *unconverted* (:class:`~pydicom.dataelem.RawDataElement`) and hands
their bytes over exactly as :mod:`~dicomflow.dicom.walker` does, so both end
in the same decoding code (:mod:`~dicomflow.dicom.values`).

pydicom reads a short value or a partial element header at the end of a file
without complaint; a :class:`_Watch` passed as its ``stop_when`` callback sees
every top-level element header, stops at Pixel Data (as
``stop_before_pixels`` does, so pixels are never read) and lets this module
report a file that ends inside an element as
:class:`~dicomflow.dicom.exceptions.TruncatedError`.

pydicom emits Python warnings on odd files; they are caught here and logged
with the file's name (the test suite turns any warning into an error, and a
worker process has nobody to show them to).
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Sequence
from typing import BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filereader import read_partial
from pydicom.tag import BaseTag

from dicomflow.dicom.constants import (
    DEFLATED_EXPLICIT_VR_LE,
    ENCODING_TS,
    PIXEL_TAGS,
    PREFIX,
    SPECIFIC_CHARACTER_SET,
    TRANSFER_SYNTAX_UID,
    UNDEFINED_LENGTH,
    WANTED,
)
from dicomflow.dicom.exceptions import NotDicomError, TruncatedError
from dicomflow.dicom.part10 import META_START, looks_like_dataset, read_file_meta
from dicomflow.dicom.walker import RawHeader

_log = logging.getLogger(__name__)

UNDEFINED = UNDEFINED_LENGTH


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


def read_file(path: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """Read the wanted attributes of the file at ``path`` with pydicom.

    Raises:
        NotDicomError: no DICOM prefix and no plausible data set start.
        TruncatedError: the file ends inside an element.
        OSError: the file cannot be opened or read.
        Exception: whatever pydicom raises on a file it cannot parse
            (:mod:`~dicomflow.dicom.reader` turns it into a verdict).
    """
    with open(path, "rb") as fp:
        return read_fp(fp, os.fstat(fp.fileno()).st_size, path, wanted)


def read_bytes(data: bytes, name: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """:func:`read_file` over the bytes of a whole file in memory; ``name`` is for log messages."""
    return read_fp(io.BytesIO(data), len(data), name, wanted)


def read_fp(fp: BinaryIO, size: int, name: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """Read the wanted attributes from an open binary file of ``size`` bytes, positioned anywhere."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fp.seek(0)
            return _read(fp, size, name, wanted)
        finally:
            for warning in caught:
                _log.warning("%s: %s", name, warning.message)


def _read(fp: BinaryIO, size: int, path: str, wanted: frozenset[int]) -> RawHeader:
    """The body of :func:`read_fp`, run with warnings caught."""
    start = fp.read(META_START)
    fp.seek(0)
    force = start[META_START - 4:META_START] != PREFIX
    if force and not looks_like_dataset(start):
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
    if transfer_syntax != DEFLATED_EXPLICIT_VR_LE:  # else pydicom read an inflated copy, not fp
        _check_complete(watch, fp)
    header = RawHeader(transfer_syntax, little, size)
    for elem in elements:
        length = getattr(elem, "length", UNDEFINED)
        value = getattr(elem, "value", None)
        if isinstance(value, bytes) and length != UNDEFINED and len(value) < length:
            raise TruncatedError(f"element {elem.tag} needs {length} bytes; the file has {len(value)} left")
        if elem.tag in wanted:
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
    is rebuilt from its terms, which is all :func:`~dicomflow.dicom.values.encodings_for` uses.
    """
    if isinstance(elem, RawDataElement):
        return elem.value if elem.value is not None else b""
    if elem.tag == SPECIFIC_CHARACTER_SET:
        value = elem.value
        terms = [value] if isinstance(value, str) else list(value or [])
        return "\\".join(terms).encode("latin-1", "replace")
    return None


def _meta_end(fp: BinaryIO) -> int | None:
    """Where the file meta group ends (0 without a DICM prefix): the data set's first byte; None if unknown."""
    fp.seek(0)
    data = fp.read()
    if data[META_START - 4:META_START] != PREFIX:
        return 0
    try:
        return read_file_meta(data, META_START)[1]
    except ValueError:  # truncated or unusable meta: pydicom's verdict stands
        return None


__all__ = ["read_bytes", "read_file", "read_fp"]
