"""The values both ingest and the consumer derive from a header: one function each.

A store event (written by the receiver or the folder publisher) and the
records the consumer indexes describe the same instance, so every value
they share is derived here, from the same :class:`~dicomflow.dicom.values.Values`:

* **UIDs** (Study, Series, SOP Instance, SOP Class): required, taken from the
  data set, and valid by the DICOM UID grammar (PS3.5 9.1: digits and dots,
  at most 64 characters, no empty component, no leading zero):
  :func:`uid_problem`, :func:`instance_uids`. Such a UID is also a safe
  file name.
* **study date**: StudyDate, else SeriesDate, else ContentDate, else
  AcquisitionDate, else the date of the receipt (the store event's
  ``created_time``): :func:`study_date`. Invalid dates are skipped (logged).
* **patient ID** (``""`` when absent) and **accession number** (``None``):
  text decoded with the Specific Character Set, trimmed.
* **number of frames**: NumberOfFrames, or 1 when absent or not a positive integer.
* **tenant tag**: the configured private tag's value, trimmed; which tenant
  wins (override, tag, calling AE, default) is
  :class:`~dicomflow.ingest.tenant.TenantResolver`'s rule, and the consumer
  takes the store event's tenant.

The rule set is documented in docs/receiver.md ("Derived values").
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Final, cast

from dicomflow.dicom.constants import (
    ACCESSION_NUMBER,
    ACQUISITION_DATE,
    CONTENT_DATE,
    NUMBER_OF_FRAMES,
    PATIENT_ID,
    SERIES_DATE,
    SERIES_INSTANCE_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_DATE,
    STUDY_INSTANCE_UID,
    tag_name,
)
from dicomflow.dicom.exceptions import DerivedValueError
from dicomflow.dicom.values import PADDING, Values
from dicomflow.dicom.walker import RawHeader

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- UIDs

#: Longest UID the standard allows.
UID_MAX_LENGTH: Final = 64
_UID = re.compile(r"(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*))*")

#: The required UIDs, with the names messages and C-STORE comments use.
REQUIRED_UIDS: Final = (
    (STUDY_INSTANCE_UID, "Study Instance UID"),
    (SERIES_INSTANCE_UID, "Series Instance UID"),
    (SOP_INSTANCE_UID, "SOP Instance UID"),
    (SOP_CLASS_UID, "SOP Class UID"),
)


#: Verdicts on recent UIDs: a study's and a series' UIDs, and the SOP classes, repeat file after file.
_verdicts: dict[str, str | None] = {}
_VERDICTS_MAX: Final = 4096


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a valid DICOM UID, or None when it is."""
    try:
        return _verdicts[value]
    except KeyError:
        pass
    problem = _uid_problem(value)
    if len(_verdicts) >= _VERDICTS_MAX:
        _verdicts.clear()
    _verdicts[value] = problem
    return problem


def _uid_problem(value: str) -> str | None:
    if not value:
        return "empty"
    if len(value) > UID_MAX_LENGTH:
        return f"longer than {UID_MAX_LENGTH} characters ({len(value)})"
    if _UID.fullmatch(value) is not None:
        return None
    if any(c not in "0123456789." for c in value):
        bad = next(c for c in value if c not in "0123456789.")
        return f"character {bad!r} not allowed (digits and dots only)"
    if value.startswith(".") or value.endswith(".") or ".." in value:
        return "empty component"
    return "component with a leading zero"


def is_valid_uid(value: str) -> bool:
    """True when ``value`` follows the DICOM UID grammar exactly (no padding)."""
    return len(value) <= UID_MAX_LENGTH and _UID.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class InstanceUIDs:
    """The four required UIDs of an instance, validated."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str


def instance_uids(v: Values) -> InstanceUIDs:
    """The required UIDs of the data set, validated.

    Raises:
        DerivedValueError: one is missing or empty (``missing``), or is not a
            valid UID; the reason names the attribute.
    """
    found = [v.uid(tag) for tag, _ in REQUIRED_UIDS]
    if None in found:
        absent = [tag for (tag, _), uid in zip(REQUIRED_UIDS, found, strict=True) if uid is None]
        raise DerivedValueError(
            "required attribute missing or empty: " + ", ".join(tag_name(tag) for tag in absent),
            attribute=dict(REQUIRED_UIDS)[absent[0]], missing=True,
        )
    study, series, sop, sop_class = cast("list[str]", found)
    for (tag, name), uid in zip(REQUIRED_UIDS, (study, series, sop, sop_class), strict=True):
        problem = uid_problem(uid)
        if problem is not None:
            raise DerivedValueError(
                f"{tag_name(tag)} is not a valid UID: {uid[:80]!r} ({problem})",
                attribute=name, missing=False, value=uid, problem=problem,
            )
    return InstanceUIDs(study, series, sop, sop_class)


# --------------------------------------------------------------------------- study date

#: Where the study date comes from when StudyDate is absent or invalid, in order; then the receipt date.
STUDY_DATE_FALLBACKS: Final = (SERIES_DATE, CONTENT_DATE, ACQUISITION_DATE)


def study_date(v: Values, received: dt.datetime) -> dt.date:
    """StudyDate, else SeriesDate, ContentDate, AcquisitionDate, else ``received``'s date.

    Why: StudyDate is Type 2 (may be empty), and the storage path and the
    wire format need a date; the receipt date keeps the instance findable.
    ``received`` is the store event's ``created_time``, so ingest and the
    consumer fall back to the same day.
    """
    own = v.date(STUDY_DATE)
    if own is not None:
        return own
    for tag in STUDY_DATE_FALLBACKS:
        found = v.date(tag)
        if found is not None:
            _log.debug("%s: no valid StudyDate; using %s", v.path, tag_name(tag))
            return found
    _log.debug("%s: no valid StudyDate, SeriesDate, ContentDate or AcquisitionDate; using the receipt date", v.path)
    return received.date()


# --------------------------------------------------------------------------- the rest


def patient_id(v: Values) -> str:
    """PatientID decoded with the character set, trimmed; ``""`` when absent or empty."""
    return v.text(PATIENT_ID) or ""


def accession_number(v: Values) -> str | None:
    """AccessionNumber decoded with the character set, trimmed; ``None`` when absent or empty."""
    return v.text(ACCESSION_NUMBER)


def number_of_frames(v: Values) -> int:
    """NumberOfFrames (IS), or 1 when absent or not a positive integer."""
    text = v.single(NUMBER_OF_FRAMES)
    if text is None:
        return 1
    try:
        frames = int(text)
    except ValueError:
        return 1
    return frames if 0 < frames < 2**31 else 1


def tenant_tag_value(v: Values, tag: int) -> str | None:
    """The tenant private tag's value, trimmed; ``None`` when absent or empty (validated by ingest)."""
    raw = v.raw(tag)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip(PADDING) or None


# --------------------------------------------------------------------------- what ingest needs


@dataclass(frozen=True)
class InstanceHeader:
    """What ingest needs to know about one instance: validated UIDs and the derived values."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    accession_number: str | None
    study_date: dt.date
    number_of_frames: int
    #: The tenant tag's value, stripped; None when absent or empty.
    tenant: str | None
    #: The receipt time: the store event's created_time and the last study date fallback.
    received: dt.datetime


def instance_header(raw: RawHeader, *, name: str, tenant_tag: int, received: dt.datetime) -> InstanceHeader:
    """Derive the ingest header from a raw header (``name`` says where the bytes are, for logs).

    Raises:
        DerivedValueError: a required UID is missing or invalid.
    """
    v = Values(raw, name)
    uids = instance_uids(v)
    return InstanceHeader(
        sop_class_uid=uids.sop_class_uid,
        sop_instance_uid=uids.sop_uid,
        study_uid=uids.study_uid,
        series_uid=uids.series_uid,
        patient_id=patient_id(v),
        accession_number=accession_number(v),
        study_date=study_date(v, received),
        number_of_frames=number_of_frames(v),
        tenant=tenant_tag_value(v, tenant_tag),
        received=received,
    )


__all__ = [
    "REQUIRED_UIDS",
    "STUDY_DATE_FALLBACKS",
    "UID_MAX_LENGTH",
    "InstanceHeader",
    "InstanceUIDs",
    "accession_number",
    "instance_header",
    "instance_uids",
    "is_valid_uid",
    "number_of_frames",
    "patient_id",
    "study_date",
    "tenant_tag_value",
    "uid_problem",
]
