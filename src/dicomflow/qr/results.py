"""Result rows as C-FIND response identifiers (PS3.4 C.4.1.1.3.2), and identifiers to and from bytes.

Each answer holds every key of the request: filled from the row when the
index has it at this level (or above), else empty with the request's VR;
plus Specific Character Set (always ISO_IR 192: the index holds Unicode) and
the Query/Retrieve Level. RetrieveAETitle is this SCP's AE title and
InstanceAvailability ONLINE, when asked.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.valuerep import format_number_as_ds

from dicomflow.dicom.constants import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, LONG_VR_NAMES, TEXT_VRS
from dicomflow.qr.identifier import FindQuery
from dicomflow.qr.model import (
    ANSWER_CHARACTER_SET,
    ATTRIBUTES,
    INSTANCE_AVAILABILITY,
    QUERY_RETRIEVE_LEVEL,
    RETRIEVE_AE_TITLE,
    SPECIFIC_CHARACTER_SET,
    Attribute,
    depth,
)

#: The transfer syntaxes an identifier may travel in (no compression or deflate for a handful of elements).
IDENTIFIER_SYNTAXES = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE})


def decode_identifier(data: bytes, transfer_syntax: str) -> Dataset:
    """The identifier's data set (read whole; it is a few hundred bytes).

    Raises:
        Exception: pydicom's, for bytes that are not a data set (the caller answers 0xC000).
    """
    ds = read_dataset(BytesIO(data), transfer_syntax == IMPLICIT_VR_LE, transfer_syntax != EXPLICIT_VR_BE)
    for _elem in ds:  # every value converted now, so a bad one fails here, not while matching
        pass
    return ds


def encode_identifier(ds: Dataset, transfer_syntax: str) -> bytes:
    """``ds`` in ``transfer_syntax`` (no preamble or file meta: a DIMSE data set)."""
    fp = DicomBytesIO()
    fp.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LE
    fp.is_little_endian = transfer_syntax != EXPLICIT_VR_BE
    write_dataset(fp, ds)
    return fp.getvalue()


def _value(attribute: Attribute, raw: Any) -> Any:
    """A column's value as the answer holds it (str, list of str for several values, int for US; None: empty)."""
    if raw is None or raw == "":
        return None
    vr = attribute.vr
    if vr == "DA":
        return raw.strftime("%Y%m%d") if isinstance(raw, dt.date) else str(raw)
    if vr == "TM":
        if isinstance(raw, dt.time):
            return raw.strftime("%H%M%S.%f") if raw.microsecond else raw.strftime("%H%M%S")
        return str(raw)
    if vr == "IS":
        return str(int(raw))
    if vr == "DS":
        return format_number_as_ds(float(raw))
    if vr == "US":
        return int(raw)
    if isinstance(raw, (list, tuple)):
        return sorted(str(v) for v in raw) or None
    if vr == "CS" and "\\" in str(raw):
        return str(raw).split("\\")
    return str(raw)


#: Explicit VR encodings with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(LONG_VR_NAMES)
_TAG_LE = struct.Struct("<HHI")
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2s2xI")


@dataclass(frozen=True)
class Answer:
    """One response identifier: ``(tag, VR, value)`` in ascending tag order (value None: zero length)."""

    elements: tuple[tuple[int, str, Any], ...]

    def dataset(self) -> Dataset:
        """As a pydicom data set (for the pynetdicom engine, and for big endian)."""
        ds = Dataset()
        for tag, vr, value in self.elements:
            ds.add(DataElement(tag, vr, [] if vr == "SQ" else value))
        return ds

    def encode(self, transfer_syntax: str) -> bytes:
        """The identifier's bytes in ``transfer_syntax``, written directly (pydicom costs ~2 ms an answer)."""
        if transfer_syntax == EXPLICIT_VR_BE:
            return encode_identifier(self.dataset(), transfer_syntax)
        implicit = transfer_syntax == IMPLICIT_VR_LE
        out = bytearray()
        for tag, vr, value in self.elements:
            data = _bytes(vr, value)
            group, element = tag >> 16, tag & 0xFFFF
            if implicit:
                out += _TAG_LE.pack(group, element, len(data))
            elif vr in _LONG_VRS:
                out += _EXPLICIT_LONG.pack(group, element, vr.encode("ascii"), len(data))
            else:
                out += _EXPLICIT_SHORT.pack(group, element, vr.encode("ascii"), len(data))
            out += data
        return bytes(out)


def _bytes(vr: str, value: Any) -> bytes:
    if value is None or vr == "SQ":
        return b""
    if vr == "US":
        return struct.pack("<H", int(value))
    text = "\\".join(value) if isinstance(value, list) else str(value)
    data = text.encode("utf-8") if vr in TEXT_VRS else text.encode("ascii", "replace")
    if len(data) % 2:
        data += b"\x00" if vr == "UI" else b" "
    return data


def _plain_vr(vr: str) -> str:
    """A pydicom ambiguous VR (``US or SS``, ``OB or OW``) as the first of them."""
    return vr.split(" or ")[0] if " or " in vr else vr


def answer(query: FindQuery, row: dict[str, Any], ae_title: str) -> Answer:
    """The response identifier of one result row."""
    elements: list[tuple[int, str, Any]] = [(SPECIFIC_CHARACTER_SET, "CS", ANSWER_CHARACTER_SET),
                                            (QUERY_RETRIEVE_LEVEL, "CS", query.level)]
    here = depth(query.model, query.level)
    for tag in query.return_tags:
        attribute = ATTRIBUTES.get(tag)
        value: Any = None
        if attribute is not None and depth(query.model, attribute.level_in(query.model)) <= here:
            value = _value(attribute, row.get(attribute.column))
        elif tag == RETRIEVE_AE_TITLE:
            value = ae_title
        elif tag == INSTANCE_AVAILABILITY:
            value = "ONLINE"
        vr = attribute.vr if attribute is not None else _plain_vr(query.elements[tag].VR)
        elements.append((tag, vr, value))
    elements.sort(key=lambda e: e[0])
    return Answer(tuple(elements))


__all__ = ["IDENTIFIER_SYNTAXES", "Answer", "answer", "decode_identifier", "encode_identifier"]
