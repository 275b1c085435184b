"""Result rows as C-FIND response identifiers (PS3.4 C.4.1.1.3.2), and identifiers to and from bytes.

Each answer holds every key of the request: filled from the row when the
index has it at this level (or above), else empty with the request's VR;
plus Specific Character Set (always ISO_IR 192: the index holds Unicode) and
the Query/Retrieve Level. RetrieveAETitle is this SCP's AE title and
InstanceAvailability ONLINE, when asked.
"""

from __future__ import annotations

import datetime as dt
from io import BytesIO
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.valuerep import DSfloat

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

IMPLICIT_VR_LE = "1.2.840.10008.1.2"
EXPLICIT_VR_BE = "1.2.840.10008.1.2.2"
#: The transfer syntaxes an identifier may travel in (no compression or deflate for a handful of elements).
IDENTIFIER_SYNTAXES = frozenset({IMPLICIT_VR_LE, "1.2.840.10008.1.2.1", EXPLICIT_VR_BE})


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
    """A column's value in the form pydicom takes for the attribute's VR (None: empty)."""
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
        return DSfloat(float(raw), auto_format=True)
    if vr == "US":
        return int(raw)
    if isinstance(raw, (list, tuple)):
        return sorted(str(v) for v in raw) or None
    if vr == "CS" and "\\" in str(raw):
        return str(raw).split("\\")
    return str(raw)


def answer(query: FindQuery, row: dict[str, Any], ae_title: str) -> Dataset:
    """The response identifier of one result row."""
    ds = Dataset()
    ds.add_new(SPECIFIC_CHARACTER_SET, "CS", ANSWER_CHARACTER_SET)
    ds.add_new(QUERY_RETRIEVE_LEVEL, "CS", query.level)
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
        vr = attribute.vr if attribute is not None else query.elements[tag].VR
        if vr == "SQ":
            ds.add(DataElement(tag, "SQ", []))
        else:
            ds.add(DataElement(tag, vr, value))
    return ds


__all__ = ["IDENTIFIER_SYNTAXES", "answer", "decode_identifier", "encode_identifier"]
