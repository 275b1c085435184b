"""DICOM JSON (PS3.18 Annex F) from index rows and from instance headers.

Index rows (QIDO-RS answers) are turned into attributes with the VR the
standard data dictionary gives each tag: DA as ``YYYYMMDD``, TM as
``HHMMSS[.ffffff]``, IS / DS / US as JSON numbers, PN split into its
Alphabetic / Ideographic / Phonetic component groups at ``=``.

Instance headers (WADO-RS metadata) are encoded by pydicom's own DICOM JSON
writer; values longer than the bulk data threshold, and the pixel data, are
replaced by a ``BulkDataURI``. The URIs are written relative to the service
root (``/studies/...``) so a cached document serves any host name: the
server puts its base URL in front when it answers (:func:`absolute_bulk_uris`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

log = logging.getLogger(__name__)

Json = dict[str, Any]
#: Every bulk data URI written by :func:`dataset_json` starts with this.
BULK_PREFIX = "/studies/"
_BULK_KEY = b'"BulkDataURI":"'


def tag_hex(tag: int) -> str:
    """``0x00100010`` -> ``"00100010"`` (DICOM JSON keys)."""
    return f"{tag:08X}"


def parse_tag(text: str) -> int | None:
    """A keyword (``PatientName``) or 8 hex digits (``00100010``) as a tag; None when neither."""
    if len(text) == 8:
        try:
            return int(text, 16)
        except ValueError:
            pass
    tag = tag_for_keyword(text)
    return int(tag) if tag is not None else None


def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or tag_hex(tag)


def pn_value(text: str) -> Json:
    """A PN value as its component groups: ``Yamada^Tarou=山田^太郎`` -> Alphabetic + Ideographic."""
    groups = text.split("=")
    out: Json = {}
    for name, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False):
        if group:
            out[name] = group
    return out


def _da(value: Any) -> str:
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    return str(value)


def _tm(value: Any) -> str:
    if isinstance(value, dt.time):
        text = value.strftime("%H%M%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}"
        return text
    return str(value)


def _number(value: Any) -> int | float:
    if isinstance(value, (int, float)):
        return value
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def attribute(tag: int, value: Any, vr: str | None = None) -> Json:
    """One DICOM JSON attribute (``{"vr": ..., "Value": [...]}``); ``None`` or ``[]`` -> no Value.

    ``value`` may be a list (multi-valued) or a single value; strings with
    backslashes are split into values, as DICOM encodes them.
    """
    vr = vr or dictionary_VR(tag)
    out: Json = {"vr": vr}
    if value is None or value == "" or value == []:
        return out
    values: list[Any]
    if isinstance(value, (list, tuple)):
        values = [v for v in value if v is not None]
    elif isinstance(value, str) and "\\" in value and vr not in ("UT", "ST", "LT", "UR"):
        values = value.split("\\")
    else:
        values = [value]
    if vr == "PN":
        out["Value"] = [pn_value(str(v)) for v in values]
    elif vr == "DA":
        out["Value"] = [_da(v) for v in values]
    elif vr == "TM":
        out["Value"] = [_tm(v) for v in values]
    elif vr in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"):
        out["Value"] = [_number(v) for v in values]
    else:
        out["Value"] = [str(v) for v in values]
    if not out["Value"]:
        del out["Value"]
    return out


def encode(attributes: Mapping[int, tuple[str | None, Any]]) -> Json:
    """tag -> (VR or None for the dictionary's, value) as a DICOM JSON object, keys in tag order."""
    return {tag_hex(tag): attribute(tag, value, vr) for tag, (vr, value) in sorted(attributes.items())}


def dataset_json(ds: Any, bulk_uri: Callable[[str], str], threshold: int = 1024,
                 pixel_data: bool = False) -> Json:
    """A pydicom dataset as DICOM JSON with large binary values replaced by BulkDataURIs.

    ``bulk_uri(tag_path)`` gives the URI of an element (``7FE00010``, or
    ``00540016/0/00181072`` inside a sequence item). ``pixel_data`` adds the
    Pixel Data BulkDataURI for a header read without pixels.
    """
    def walk(dataset: Any, prefix: str) -> Json:
        out: Json = {}
        for elem in dataset:
            key = tag_hex(int(elem.tag))
            path = f"{prefix}{key}"
            if elem.VR == "SQ":
                items = [walk(item, f"{path}/{i}/") for i, item in enumerate(elem.value)]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            binary = elem.VR in ("OB", "OD", "OF", "OL", "OV", "OW", "UN")
            if binary and elem.value is not None and len(elem.value) > threshold:
                out[key] = {"vr": elem.VR, "BulkDataURI": bulk_uri(path)}
                continue
            try:
                out[key] = elem.to_json_dict(None, threshold)
            except (ValueError, TypeError, OverflowError) as exc:  # a stored value its VR cannot hold ('800\xff' as DS)
                log.warning("metadata: element %s (%s) has a value its VR cannot hold, sent without it: %s",
                            path, elem.VR, type(exc).__name__)
                out[key] = {"vr": elem.VR}
        return out

    result = walk(ds, "")
    if pixel_data and "7FE00010" not in result:
        vr = "OB" if getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) and \
            ds.file_meta.TransferSyntaxUID.is_compressed else "OW"
        result["7FE00010"] = {"vr": vr, "BulkDataURI": bulk_uri("7FE00010")}
    return dict(sorted(result.items()))


def absolute_bulk_uris(document: bytes, base: str) -> bytes:
    """Put ``base`` (``http://host:port``, no trailing slash) in front of every relative BulkDataURI."""
    return document.replace(_BULK_KEY + b"/", _BULK_KEY + base.encode() + b"/")


def join_array(documents: Iterable[bytes]) -> Iterable[bytes]:
    """JSON array of already encoded objects, as chunks."""
    yield b"["
    first = True
    for doc in documents:
        if not first:
            yield b","
        first = False
        yield doc
    yield b"]"


__all__ = [
    "BULK_PREFIX",
    "Json",
    "absolute_bulk_uris",
    "attribute",
    "dataset_json",
    "encode",
    "join_array",
    "keyword",
    "parse_tag",
    "pn_value",
    "tag_hex",
]
