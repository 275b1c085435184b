"""Raw header bytes → the series-state and instance records of the wire format.

One place decodes values, whichever reader found the bytes, so the fast and
the general reader give identical records by construction once they agree on
the bytes. Decisions made here (documented in DESIGN.md "Wire format" and the
issue):

* Text of the VRs the Specific Character Set applies to (PN, LO, SH) is
  decoded with it: single-byte ISO 8859 parts, UTF-8, GB18030/GBK, and ISO 2022
  code extensions with escape sequences (Japanese, Korean, Chinese). Every
  other string VR (CS, AS, DS, IS, DA, TM, UI) is the default repertoire.
* Padding is dropped (leading/trailing spaces, trailing NULs); an empty value
  is null. Person names lose trailing empty components (``"OB^^^^"`` is
  ``"OB"``, ``"^^^^"`` is null), as PS3.5 6.2 makes them equivalent.
* Multi-valued strings are joined with a backslash, as DICOM encodes them.
  A single-valued field given several values keeps the first (warning).
* An invalid date, time or number is null, logged at WARNING with the file
  path and the tag, never with a patient attribute's value.
* StudyDate falls back to SeriesDate, ContentDate, AcquisitionDate, then the
  receipt date; ``study_date_origin`` keeps the StudyDate text as found
  (``""`` when absent; an invalid value too, cut to 8 bytes), except that
  the legacy ``YYYY.MM.DD`` becomes ``YYYYMMDD``: cut to the field's 8 bytes
  it would read ``YYYY.MM.``, which no consumer can use. A missing PatientID
  is ``""``.
* StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID and SOPClassUID are
  required; a file without them (or with one that cannot be a UID: longer
  than 64 bytes, several values, control characters) is an
  :class:`~dicomflow.errors.ExtractError`.
* Byte limits are enforced by the message Structs themselves, truncating on
  a character boundary.
"""

from __future__ import annotations

import datetime as dt
import logging
import struct
import warnings
from collections.abc import Callable
from typing import TypeVar

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import TEXT_VR_DELIMS

from dicomflow.errors import ExtractError
from dicomflow.extract import raw as t
from dicomflow.extract.raw import RawHeader, tag_name
from dicomflow.extract.values import (
    PADDING,
    join_values,
    parse_date,
    parse_decimal,
    parse_integer,
    parse_time,
)
from dicomflow.models import DicomImageMeta, DicomStateMeta, uid_hash

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: Python codec of the default repertoire (what pydicom calls ``iso8859``):
#: never fails, so odd bytes in a CS value cannot stop an extraction.
DEFAULT_CODEC = "latin-1"
_DEFAULT_ENCODINGS: list[str] = ["iso8859"]

#: Raw (0008,0005) value → Python codecs; a handful of distinct values exist
#: in any archive, and converting one costs a dictionary walk plus warnings.
_encodings_cache: dict[bytes, list[str]] = {}
_ENCODINGS_CACHE_MAX = 256

_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_S16 = {True: struct.Struct("<h"), False: struct.Struct(">h")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_S32 = {True: struct.Struct("<i"), False: struct.Struct(">i")}
#: VRs a US attribute may turn up with and still hold a 16-bit unsigned value:
#: the right one, UN (explicit VR file, unknown to the writer), OB/OW (sloppy).
_AS_US = frozenset({"US", "UN", "OB", "OW"})
_TEXT_NUMBERS = frozenset({"IS", "DS", "CS", "SH", "LO"})


def encodings_for(raw: bytes | None) -> list[str]:
    """The Python codecs for a raw Specific Character Set value (cached).

    An unknown or misspelled term is handled by pydicom's rules (corrected
    where the intent is clear, else the default repertoire); its warnings are
    logged here instead of being raised as Python warnings.
    """
    if not raw:
        return _DEFAULT_ENCODINGS
    cached = _encodings_cache.get(raw)
    if cached is not None:
        return cached
    terms = [v.strip(PADDING) for v in raw.decode(DEFAULT_CODEC).split("\\")]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            encodings = convert_encodings(terms if len(terms) > 1 else terms[0])
        except LookupError:  # pydicom configured to raise on invalid values
            encodings = list(_DEFAULT_ENCODINGS)
    for warning in caught:
        _log.warning("Specific Character Set %r: %s", terms, warning.message)
    if len(_encodings_cache) >= _ENCODINGS_CACHE_MAX:
        _encodings_cache.clear()
    _encodings_cache[raw] = encodings
    return encodings


class _Values:
    """Decodes the wanted attributes of one file, logging what it has to drop."""

    __slots__ = ("elements", "encodings", "little", "path")

    def __init__(self, header: RawHeader, path: str) -> None:
        self.path = path
        self.elements = header.elements
        self.little = header.little_endian
        charset = self.elements.get(t.SPECIFIC_CHARACTER_SET)
        self.encodings = encodings_for(charset[1] if charset else None)

    # ---------------------------------------------------------------- reporting

    def invalid(self, tag: int, reason: str, text: object = None) -> None:
        """Log a dropped value: path and tag always; the value unless it is about the patient."""
        if text is not None and tag >> 16 != 0x0010:
            _log.warning("%s: %s %r: %s; stored as null", self.path, tag_name(tag), text, reason)
        else:
            _log.warning("%s: %s: %s; stored as null", self.path, tag_name(tag), reason)

    # ---------------------------------------------------------------- strings

    def default(self, tag: int) -> str | None:
        """A default-repertoire value (CS, AS, DS, IS, DA, TM, UI) as text, padding kept."""
        item = self.elements.get(tag)
        return item[1].decode(DEFAULT_CODEC) if item is not None else None

    def text(self, tag: int) -> str | None:
        """A PN / LO / SH value decoded with the Specific Character Set, stripped."""
        item = self.elements.get(tag)
        if item is None:
            return None
        value = item[1]
        if b"\x1b" not in value:
            try:
                return value.decode(self.encodings[0]).strip(PADDING) or None
            except (UnicodeError, LookupError):
                pass
        return self._decode_slow(tag, value).strip(PADDING) or None

    def _decode_slow(self, tag: int, value: bytes) -> str:
        """ISO 2022 escapes, or bytes the declared charset cannot decode (replaced, logged)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                text = decode_bytes(value, self.encodings, TEXT_VR_DELIMS)
            except (UnicodeError, LookupError):  # pydicom configured to raise
                text = value.decode(DEFAULT_CODEC)
        for warning in caught:
            _log.warning("%s: %s: %s", self.path, tag_name(tag), warning.message)
        return text

    def person_name(self, tag: int) -> str | None:
        """A PN value without trailing empty components (``Doe^John^^^`` → ``Doe^John``)."""
        name = self.text(tag)
        if name is None or not name.endswith(("^", "=", " ")):
            return name
        groups = [g.rstrip("^ ") for g in name.split("=")]
        return "=".join(groups).rstrip("=") or None

    def joined(self, tag: int) -> str | None:
        """A multi-valued default-repertoire string, values joined with a backslash."""
        text = self.default(tag)
        return join_values(text) if text is not None else None

    def single(self, tag: int) -> str | None:
        """A default-repertoire value meant to be single: stripped; the first if several."""
        text = self.default(tag)
        if text is None:
            return None
        if "\\" in text:
            _log.warning("%s: %s has several values; using the first", self.path, tag_name(tag))
            text = text.split("\\", 1)[0]
        return text.strip(PADDING) or None

    # ---------------------------------------------------------------- parsed

    def parsed(self, tag: int, parse: Callable[[str], T | None]) -> T | None:
        """The single value of ``tag`` through ``parse``; null (logged) if it does not parse."""
        text = self.single(tag)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.invalid(tag, str(exc), text)
            return None

    def date(self, tag: int) -> dt.date | None:
        return self.parsed(tag, parse_date)

    def time(self, tag: int) -> dt.time | None:
        return self.parsed(tag, parse_time)

    def decimal(self, tag: int) -> float | None:
        return self.parsed(tag, parse_decimal)

    def integer(self, tag: int) -> int | None:
        return self.parsed(tag, parse_integer)

    def unsigned_short(self, tag: int) -> int | None:
        """A US value (Rows, BitsAllocated ...), in the file's byte order.

        Tolerates the VRs writers get wrong: UN/OB/OW holding the same two
        bytes, SS/UL/SL, and a number written as text.
        """
        item = self.elements.get(tag)
        if item is None:
            return None
        vr, value = item
        size = len(value)
        if size == 0:
            return None
        try:
            if vr is None or vr in _AS_US:
                if size % 2 == 0:
                    number: int = _U16[self.little].unpack_from(value)[0]
                    return number
            elif vr == "SS" and size % 2 == 0:
                number = _S16[self.little].unpack_from(value)[0]
                return number
            elif vr in ("UL", "SL") and size % 4 == 0:
                number = (_U32 if vr == "UL" else _S32)[self.little].unpack_from(value)[0]
                return number
            elif vr in _TEXT_NUMBERS:
                return self.integer(tag)
        except struct.error:  # pragma: no cover - sizes checked above
            pass
        self.invalid(tag, f"{size} bytes with VR {vr} is not an unsigned short")
        return None

    def uid(self, tag: int) -> str | None:
        """A required UID: stripped; ``None`` when absent or empty.

        Raises:
            ExtractError: present but unusable as an identity (over 64 bytes,
                several values, non-printable or non-ASCII characters).
        """
        text = self.default(tag)
        if text is None:
            return None
        uid = text.strip(PADDING)
        if not uid:
            return None
        if len(uid) > 64 or "\\" in uid or not (uid.isascii() and uid.isprintable()):
            raise ExtractError(self.path, f"{tag_name(tag)} is not a valid UID: {uid[:80]!r}")
        return uid


_REQUIRED_UIDS = (
    t.STUDY_INSTANCE_UID,
    t.SERIES_INSTANCE_UID,
    t.SOP_INSTANCE_UID,
    t.SOP_CLASS_UID,
)
_STUDY_DATE_FALLBACKS = (t.SERIES_DATE, t.CONTENT_DATE, t.ACQUISITION_DATE)


def build(
    header: RawHeader, path: str, tenant_id: str, received: dt.datetime
) -> tuple[DicomStateMeta, DicomImageMeta]:
    """Decode ``header`` into the series state and the instance record.

    Raises:
        ExtractError: a required UID is missing or unusable.
    """
    v = _Values(header, path)
    uids = [v.uid(tag) for tag in _REQUIRED_UIDS]
    study_uid, series_uid, sop_uid, sop_class_uid = uids
    if study_uid is None or series_uid is None or sop_uid is None or sop_class_uid is None:
        missing = ", ".join(tag_name(tag) for tag, uid in zip(_REQUIRED_UIDS, uids) if uid is None)
        raise ExtractError(path, f"required attribute missing or empty: {missing}")

    dates = {tag: v.date(tag) for tag in _STUDY_DATE_FALLBACKS}
    own_study_date = v.date(t.STUDY_DATE)
    study_date = own_study_date or _fallback_study_date(dates, path, received)
    origin = _study_date_origin(v.default(t.STUDY_DATE), own_study_date)
    patient_id = v.text(t.PATIENT_ID) or ""
    study_hash = uid_hash(study_uid)
    series_hash = uid_hash(series_uid)

    state = DicomStateMeta(
        tenant_id=tenant_id,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        study_uid_hash=study_hash,
        series_uid_hash=series_hash,
        study_date_origin=origin,
        patient_name=v.person_name(t.PATIENT_NAME),
        patient_sex=v.single(t.PATIENT_SEX),
        patient_birth_date=v.date(t.PATIENT_BIRTH_DATE),
        patient_birth_time=v.time(t.PATIENT_BIRTH_TIME),
        patient_age=v.single(t.PATIENT_AGE),
        patient_size=v.decimal(t.PATIENT_SIZE),
        patient_weight=v.decimal(t.PATIENT_WEIGHT),
        study_date=study_date,
        study_time=v.time(t.STUDY_TIME),
        accession_number=v.text(t.ACCESSION_NUMBER),
        study_id=v.text(t.STUDY_ID),
        study_description=v.text(t.STUDY_DESCRIPTION),
        modality=v.single(t.MODALITY),
        series_number=v.integer(t.SERIES_NUMBER),
        series_date=dates[t.SERIES_DATE],
        series_time=v.time(t.SERIES_TIME),
        series_description=v.text(t.SERIES_DESCRIPTION),
        body_part_examined=v.single(t.BODY_PART_EXAMINED),
        protocol_name=v.text(t.PROTOCOL_NAME),
        series_related_instances=None,
        created_time=received,
        updated_time=received,
    )
    image = DicomImageMeta(
        tenant_id=tenant_id,
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=sop_uid,
        study_uid_hash=study_hash,
        series_uid_hash=series_hash,
        instance_number=v.integer(t.INSTANCE_NUMBER),
        content_date=dates[t.CONTENT_DATE],
        content_time=v.time(t.CONTENT_TIME),
        image_type=v.joined(t.IMAGE_TYPE),
        image_orientation_patient=v.joined(t.IMAGE_ORIENTATION_PATIENT),
        image_position_patient=v.joined(t.IMAGE_POSITION_PATIENT),
        slice_thickness=v.decimal(t.SLICE_THICKNESS),
        spacing_between_slices=v.decimal(t.SPACING_BETWEEN_SLICES),
        slice_location=v.decimal(t.SLICE_LOCATION),
        samples_per_pixel=v.unsigned_short(t.SAMPLES_PER_PIXEL),
        photometric_interpretation=v.single(t.PHOTOMETRIC_INTERPRETATION),
        width=v.unsigned_short(t.ROWS),
        columns=v.unsigned_short(t.COLUMNS),
        bits_allocated=v.unsigned_short(t.BITS_ALLOCATED),
        bits_stored=v.unsigned_short(t.BITS_STORED),
        high_bit=v.unsigned_short(t.HIGH_BIT),
        pixel_representation=v.unsigned_short(t.PIXEL_REPRESENTATION),
        rescale_intercept=v.decimal(t.RESCALE_INTERCEPT),
        rescale_slope=v.decimal(t.RESCALE_SLOPE),
        rescale_type=v.text(t.RESCALE_TYPE),
        window_center=v.joined(t.WINDOW_CENTER),
        window_width=v.joined(t.WINDOW_WIDTH),
        transfer_syntax_uid=header.transfer_syntax_uid,
        pixel_data_location=path,
        thumbnail_location=None,
        sop_class_uid=sop_class_uid,
        image_status="ACTIVE",
        space_size=header.file_size,
        created_time=received,
        updated_time=received,
    )
    return state, image


def _study_date_origin(text: str | None, parsed: dt.date | None) -> str:
    """StudyDate as the file has it (first value, unpadded); legacy ``YYYY.MM.DD`` as ``YYYYMMDD``."""
    if text is None:
        return ""
    text = text.split("\\", 1)[0].strip(PADDING)
    if parsed is not None and len(text) == 10 and text[4] == text[7] == ".":
        return text.replace(".", "")
    return text


def _fallback_study_date(dates: dict[int, dt.date | None], path: str, received: dt.datetime) -> dt.date:
    """StudyDate absent or invalid: the first of SeriesDate, ContentDate, AcquisitionDate, else the receipt date."""
    for tag in _STUDY_DATE_FALLBACKS:
        found = dates[tag]
        if found is not None:
            _log.debug("%s: no valid StudyDate; using %s", path, tag_name(tag))
            return found
    _log.debug("%s: no valid StudyDate, SeriesDate, ContentDate or AcquisitionDate; using the receipt date", path)
    return received.date()


__all__ = ["build", "encodings_for"]
