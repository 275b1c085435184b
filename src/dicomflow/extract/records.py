"""Raw header bytes → the series-state and instance records of the wire format.

One place builds the records, whichever reader found the bytes; the values
are decoded by :class:`~dicomflow.dicom.values.Values` (character sets,
dates, numbers: see :mod:`dicomflow.dicom.values`) and the values a store
event shares with the records (UIDs, study date, patient ID, accession
number) come from :mod:`dicomflow.dicom.derived`, the functions ingest uses
too. Decisions made here:

* Multi-valued strings are joined with a backslash, as DICOM encodes them.
  A single-valued field given several values keeps the first (warning).
* An invalid date, time or number is null, logged at WARNING with the file
  path and the tag, never with a patient attribute's value.
* ``study_date_origin`` keeps the StudyDate text as found (``""`` when
  absent; an invalid value too, cut to 8 bytes), except that the legacy
  ``YYYY.MM.DD`` becomes ``YYYYMMDD``: cut to the field's 8 bytes it would
  read ``YYYY.MM.``, which no consumer can use.
* A file without the four required UIDs (or with one that is not a valid
  UID) is an :class:`~dicomflow.errors.ExtractError`.
* Byte limits are enforced by the message Structs themselves, truncating on
  a character boundary.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from dicomflow.dicom import constants as t
from dicomflow.dicom import derived
from dicomflow.dicom.exceptions import DerivedValueError
from dicomflow.dicom.values import PADDING, Values, encodings_for
from dicomflow.dicom.walker import RawHeader
from dicomflow.errors import ExtractError
from dicomflow.models import DicomImageMeta, DicomStateMeta, uid_hash


def build(
    header: RawHeader, path: str, tenant_id: str, received: dt.datetime
) -> tuple[DicomStateMeta, DicomImageMeta]:
    """Decode ``header`` into the series state and the instance record.

    Raises:
        ExtractError: a required UID is missing or unusable.
    """
    v = Values(header, path)
    try:
        uids = derived.instance_uids(v)
    except DerivedValueError as exc:
        raise ExtractError(path, exc.reason) from exc
    study_date = derived.study_date(v, received)
    origin = _study_date_origin(v.default(t.STUDY_DATE), v.date(t.STUDY_DATE))
    keys = _SeriesKeys(tenant_id, derived.patient_id(v), uids.study_uid, uids.series_uid, uid_hash(uids.study_uid),
                       uid_hash(uids.series_uid))
    return _state(v, keys, study_date, origin, received), _image(v, keys, uids, header, path, received)


class _SeriesKeys(NamedTuple):
    """The key fields the series state and the instance record share."""

    tenant_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    study_uid_hash: str
    series_uid_hash: str


def _state(v: Values, k: _SeriesKeys, study_date: dt.date, origin: str, received: dt.datetime) -> DicomStateMeta:
    """The series state: a flat mapping of attributes to DicomStateMeta fields."""
    return DicomStateMeta(
        tenant_id=k.tenant_id,
        patient_id=k.patient_id,
        study_uid=k.study_uid,
        series_uid=k.series_uid,
        study_uid_hash=k.study_uid_hash,
        series_uid_hash=k.series_uid_hash,
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
        accession_number=derived.accession_number(v),
        study_id=v.text(t.STUDY_ID),
        study_description=v.text(t.STUDY_DESCRIPTION),
        modality=v.single(t.MODALITY),
        series_number=v.integer(t.SERIES_NUMBER),
        series_date=v.date(t.SERIES_DATE),
        series_time=v.time(t.SERIES_TIME),
        series_description=v.text(t.SERIES_DESCRIPTION),
        body_part_examined=v.single(t.BODY_PART_EXAMINED),
        protocol_name=v.text(t.PROTOCOL_NAME),
        series_related_instances=None,
        created_time=received,
        updated_time=received,
    )


def _image(v: Values, k: _SeriesKeys, uids: derived.InstanceUIDs, header: RawHeader, path: str,
           received: dt.datetime) -> DicomImageMeta:
    """The instance record: a flat mapping of attributes to DicomImageMeta fields."""
    return DicomImageMeta(
        tenant_id=k.tenant_id,
        patient_id=k.patient_id,
        study_uid=k.study_uid,
        series_uid=k.series_uid,
        sop_uid=uids.sop_uid,
        study_uid_hash=k.study_uid_hash,
        series_uid_hash=k.series_uid_hash,
        instance_number=v.integer(t.INSTANCE_NUMBER),
        content_date=v.date(t.CONTENT_DATE),
        content_time=v.time(t.CONTENT_TIME),
        image_type=v.joined(t.IMAGE_TYPE),
        image_orientation_patient=v.joined(t.IMAGE_ORIENTATION_PATIENT),
        image_position_patient=v.joined(t.IMAGE_POSITION_PATIENT),
        slice_thickness=v.decimal(t.SLICE_THICKNESS),
        spacing_between_slices=v.decimal(t.SPACING_BETWEEN_SLICES),
        slice_location=v.decimal(t.SLICE_LOCATION),
        samples_per_pixel=v.unsigned_short(t.SAMPLES_PER_PIXEL),
        photometric_interpretation=v.single(t.PHOTOMETRIC_INTERPRETATION),
        width=v.unsigned_short(t.ROWS),  # the wire name of Rows (see DicomImageMeta.width)
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
        sop_class_uid=uids.sop_class_uid,
        image_status="ACTIVE",
        space_size=header.file_size,
        created_time=received,
        updated_time=received,
    )

def _study_date_origin(text: str | None, parsed: dt.date | None) -> str:
    """StudyDate as the file has it (first value, unpadded); legacy ``YYYY.MM.DD`` as ``YYYYMMDD``."""
    if text is None:
        return ""
    text = text.split("\\", 1)[0].strip(PADDING)
    if parsed is not None and len(text) == 10 and text[4] == text[7] == ".":
        return text.replace(".", "")
    return text


__all__ = ["build", "encodings_for"]
