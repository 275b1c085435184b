"""Every sample file pydicom ships: extracted with the right values, or refused with a clear reason.

"Right" is checked against an independent reading of the same file: pydicom's
own high-level API (decoded element values, its DA/TM/DS/IS classes), not the
raw bytes our readers share with the decoder.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.valuerep import DA, TM

from dicomflow.errors import ExtractError
from dicomflow.extract import extract_file
from dicomflow.models import uid_hash
from tests.conftest import PYDICOM_DATA, sample_files

RECEIVED = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
ALL_SAMPLES = sample_files("test_files") + sample_files("charset_files")


def _id(path: Path) -> str:
    return str(path.relative_to(PYDICOM_DATA))


#: Files that must be refused, and the reason they must give.
EXPECTED_ERRORS: dict[str, str] = {
    "charset_files/FileInfo.txt": "not a DICOM file",
    "charset_files/chrSQEncoding.dcm": "required attribute missing",
    "charset_files/chrSQEncoding1.dcm": "required attribute missing",
    "test_files/JPEGLSNearLossless_08.dcm": "(0020,000D) StudyInstanceUID",
    "test_files/JPEGLSNearLossless_16.dcm": "(0020,000D) StudyInstanceUID",
    "test_files/MR_truncated.dcm": "truncated file: Pixel Data needs 8192 bytes",
    "test_files/README.txt": "not a DICOM file",
    "test_files/SC_rgb_jls_lossy_line.dcm": "(0020,000E) SeriesInstanceUID",
    "test_files/SC_rgb_jls_lossy_sample.dcm": "(0020,000E) SeriesInstanceUID",
    "test_files/UN_sequence.dcm": "required attribute missing",
    "test_files/crayons.icc": "not a DICOM file",
    "test_files/dicomdirtests/DICOMDIR": "(0008,0018) SOPInstanceUID",
    "test_files/dicomdirtests/DICOMDIR-bigEnd": "required attribute missing",
    "test_files/dicomdirtests/DICOMDIR-empty.dcm": "required attribute missing",
    "test_files/dicomdirtests/DICOMDIR-implicit": "required attribute missing",
    "test_files/dicomdirtests/DICOMDIR-nooffset": "required attribute missing",
    "test_files/dicomdirtests/DICOMDIR-nopatient": "required attribute missing",
    "test_files/dicomdirtests/DICOMDIR-reordered": "required attribute missing",
    "test_files/dicomdirtests/README.txt": "not a DICOM file",
    "test_files/dicomdirtests/TINY_ALPHA/DICOMDIR": "required attribute missing",
    "test_files/dicomdirtests/TINY_ALPHA/README": "not a DICOM file",
    "test_files/empty_charset_LEI.dcm": "required attribute missing",
    "test_files/meta_missing_tsyntax.dcm": "required attribute missing",
    "test_files/nested_priv_SQ.dcm": "required attribute missing",
    # A stray byte before the first element: no DICOM parser can read it.
    "test_files/no_meta.dcm": "not a DICOM file",
    "test_files/no_meta_group_length.dcm": "required attribute missing",
    "test_files/priv_SQ.dcm": "required attribute missing",
    "test_files/rtplan.dump": "not a DICOM file",
    "test_files/rtplan_truncated.dcm": "truncated file: element (300A,00B0) needs 976 bytes",
    "test_files/rtstruct.dump": "not a DICOM file",
    "test_files/test1.json": "not a DICOM file",
    "test_files/test_PN.json": "not a DICOM file",
    "test_files/zipMR.gz": "not a DICOM file",
}

#: The multilingual files: the exact decoded patient names (PS3.5 Annex H-K examples).
PATIENT_NAMES: dict[str, str] = {
    "chrArab.dcm": "قباني^لنزار",
    "chrFren.dcm": "Buc^Jérôme",
    "chrFrenMulti.dcm": "Buc^Jérôme",
    "chrGerm.dcm": "Äneas^Rüdiger",
    "chrGreek.dcm": "Διονυσιος",
    "chrH31.dcm": "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "chrH32.dcm": "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう",
    "chrHbrw.dcm": "שרון^דבורה",
    "chrI2.dcm": "Hong^Gildong=洪^吉洞=홍^길동",
    "chrJapMulti.dcm": "やまだ^たろう",
    "chrJapMultiExplicitIR6.dcm": "やまだ^たろう",
    "chrKoreanMulti.dcm": "김희중",
    "chrRuss.dcm": "Люкceмбypг",
    "chrX1.dcm": "Wang^XiaoDong=王^小東",
    "chrX2.dcm": "Wang^XiaoDong=王^小东",
}


# --------------------------------------------------------------------------- reference


def _read_reference(path: Path) -> pydicom.Dataset:
    """The whole file through pydicom's high-level API (forcing raw datasets)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = path.read_bytes()[128:132] != b"DICM"
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=raw)
        for elem in ds:  # decode everything now, warnings silenced
            _ = elem.value
    return ds


def _get(ds: pydicom.Dataset, keyword: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = ds.get(keyword)
        except Exception:  # noqa: BLE001 - pydicom could not convert it: we must store null
            return None
    return None if value in (None, "") else value


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = _get(ds, keyword)
    return str(value).strip() or None if value is not None else None


def _multi(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = _get(ds, keyword)
    if value is None:
        return None
    values = [value] if isinstance(value, (str, int, float)) else list(value)
    return "\\".join(str(v).strip() for v in values) or None


def _first(ds: pydicom.Dataset, keyword: str) -> Any:
    value = _get(ds, keyword)
    if isinstance(value, pydicom.multival.MultiValue):
        return value[0] if len(value) else None
    return value


def _date(ds: pydicom.Dataset, keyword: str) -> dt.date | None:
    value = _first(ds, keyword)
    if not value:
        return None
    try:
        return dt.date.fromordinal(DA(str(value)).toordinal())
    except ValueError:
        return None


def _time(ds: pydicom.Dataset, keyword: str) -> dt.time | None:
    value = _first(ds, keyword)
    if not value:
        return None
    try:  # ACR-NEMA wrote HH:MM:SS; pydicom's TM only knows the DICOM form
        parsed = TM(str(value).strip().replace(":", ""))
    except ValueError:
        return None
    return dt.time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond)


def _float(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = _first(ds, keyword)
    if value is None or value == "":
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    value = _first(ds, keyword)
    return None if value is None or value == "" else int(value)


def _name(ds: pydicom.Dataset) -> str | None:
    value = _get(ds, "PatientName")
    if value is None:
        return None
    # Trailing empty components are insignificant (PS3.5 6.2): "OB^^^^" is "OB".
    groups = [re.sub(r"[\^ ]+$", "", g) for g in str(value).split("=")]
    return "=".join(groups).rstrip("=") or None


def _origin(raw: Any) -> str:
    """StudyDate text as found (first value), the legacy dotted form as YYYYMMDD."""
    if not raw:
        return ""
    text = str(raw[0] if isinstance(raw, pydicom.multival.MultiValue) else raw).strip()
    if re.fullmatch(r"\d{4}\.\d\d\.\d\d", text):
        return text.replace(".", "")
    return text[:8]


def _transfer_syntax(ds: pydicom.Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    if meta is not None and meta.get("TransferSyntaxUID"):
        return str(meta.TransferSyntaxUID)
    return {(True, True): "1.2.840.10008.1.2", (False, True): "1.2.840.10008.1.2.1"}.get(
        ds.original_encoding, "1.2.840.10008.1.2.2"
    )


def expected_records(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The field values an independent reading of ``path`` gives."""
    ds = _read_reference(path)
    study_date = (
        _date(ds, "StudyDate")
        or _date(ds, "SeriesDate")
        or _date(ds, "ContentDate")
        or _date(ds, "AcquisitionDate")
        or RECEIVED.date()
    )
    raw_study_date = _get(ds, "StudyDate")
    common = {
        "tenant_id": "acme",
        "patient_id": _text(ds, "PatientID") or "",
        "study_uid": str(ds.StudyInstanceUID),
        "series_uid": str(ds.SeriesInstanceUID),
        "study_uid_hash": uid_hash(str(ds.StudyInstanceUID)),
        "series_uid_hash": uid_hash(str(ds.SeriesInstanceUID)),
        "created_time": RECEIVED,
        "updated_time": RECEIVED,
    }
    state = {
        **common,
        "study_date_origin": _origin(raw_study_date),
        "patient_name": _name(ds),
        "patient_sex": (_text(ds, "PatientSex") or "")[:1] or None,
        "patient_birth_date": _date(ds, "PatientBirthDate"),
        "patient_birth_time": _time(ds, "PatientBirthTime"),
        "patient_age": _text(ds, "PatientAge"),
        "patient_size": _float(ds, "PatientSize"),
        "patient_weight": _float(ds, "PatientWeight"),
        "study_date": study_date,
        "study_time": _time(ds, "StudyTime"),
        "accession_number": _text(ds, "AccessionNumber"),
        "study_id": _text(ds, "StudyID"),
        "study_description": _text(ds, "StudyDescription"),
        "modality": _text(ds, "Modality"),
        "series_number": _int(ds, "SeriesNumber"),
        "series_date": _date(ds, "SeriesDate"),
        "series_time": _time(ds, "SeriesTime"),
        "series_description": _text(ds, "SeriesDescription"),
        "body_part_examined": _text(ds, "BodyPartExamined"),
        "protocol_name": _text(ds, "ProtocolName"),
        "series_related_instances": None,
    }
    image = {
        **common,
        "sop_uid": str(ds.SOPInstanceUID),
        "instance_number": _int(ds, "InstanceNumber"),
        "content_date": _date(ds, "ContentDate"),
        "content_time": _time(ds, "ContentTime"),
        "image_type": _multi(ds, "ImageType"),
        "image_orientation_patient": _multi(ds, "ImageOrientationPatient"),
        "image_position_patient": _multi(ds, "ImagePositionPatient"),
        "slice_thickness": _float(ds, "SliceThickness"),
        "spacing_between_slices": _float(ds, "SpacingBetweenSlices"),
        "slice_location": _float(ds, "SliceLocation"),
        "samples_per_pixel": _int(ds, "SamplesPerPixel"),
        "photometric_interpretation": _text(ds, "PhotometricInterpretation"),
        "width": _int(ds, "Rows"),
        "columns": _int(ds, "Columns"),
        "bits_allocated": _int(ds, "BitsAllocated"),
        "bits_stored": _int(ds, "BitsStored"),
        "high_bit": _int(ds, "HighBit"),
        "pixel_representation": _int(ds, "PixelRepresentation"),
        "rescale_intercept": _float(ds, "RescaleIntercept"),
        "rescale_slope": _float(ds, "RescaleSlope"),
        "rescale_type": _text(ds, "RescaleType"),
        "window_center": _multi(ds, "WindowCenter"),
        "window_width": _multi(ds, "WindowWidth"),
        "transfer_syntax_uid": _transfer_syntax(ds),
        "pixel_data_location": str(path),
        "thumbnail_location": None,
        "sop_class_uid": str(ds.SOPClassUID),
        "image_status": "ACTIVE",
        "space_size": os.path.getsize(path),
    }
    return state, image


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=_id)
def test_sample_file_extracts_correctly_or_fails_with_a_reason(path: Path) -> None:
    name = _id(path)
    if name in EXPECTED_ERRORS:
        with pytest.raises(ExtractError) as caught:
            extract_file(path, "acme", received=RECEIVED)
        assert caught.value.path == str(path)
        assert EXPECTED_ERRORS[name] in caught.value.reason
        assert caught.value.poison
        return

    state, image = extract_file(path, "acme", received=RECEIVED)
    want_state, want_image = expected_records(path)
    got_state = {f: getattr(state, f) for f in state.__struct_fields__}
    got_image = {f: getattr(image, f) for f in image.__struct_fields__}
    assert got_state == want_state
    assert got_image == want_image


def test_every_sample_is_accounted_for() -> None:
    """The error table names real files only (a renamed sample must not hide a failure)."""
    names = {_id(p) for p in ALL_SAMPLES}
    assert set(EXPECTED_ERRORS) <= names
    assert len(names - set(EXPECTED_ERRORS)) > 100  # most samples extract


@pytest.mark.parametrize("filename", sorted(PATIENT_NAMES))
def test_multilingual_patient_names(filename: str) -> None:
    state, _ = extract_file(PYDICOM_DATA / "charset_files" / filename, "acme", received=RECEIVED)
    assert state.patient_name == PATIENT_NAMES[filename]


def test_legacy_dotted_study_date() -> None:
    """ExplVR_BigEnd.dcm carries the ACR-NEMA form 1997.04.24 (and big endian numbers)."""
    state, image = extract_file(PYDICOM_DATA / "test_files" / "ExplVR_BigEnd.dcm", "acme", received=RECEIVED)
    assert state.study_date == dt.date(1997, 4, 24)
    assert state.study_date_origin == "19970424"  # the YYYYMMDD it means: "1997.04." would be useless
    assert (image.width, image.columns, image.bits_allocated) == (60, 80, 8)
    assert image.transfer_syntax_uid == "1.2.840.10008.1.2.2"


def test_extracting_every_sample_raises_no_python_warning(caplog: pytest.LogCaptureFixture) -> None:
    """pytest turns warnings into errors; pydicom's warnings on odd files must become log records."""
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in ALL_SAMPLES:
            try:
                extract_file(path, "acme", received=RECEIVED)
            except ExtractError:
                pass
    logged = [r for r in caplog.records if r.name.startswith("dicomflow")]
    # SC_rgb_jpeg.dcm says explicit VR in its meta but is implicit: pydicom's warning, logged with the path.
    assert any("SC_rgb_jpeg.dcm" in r.getMessage() and "implicit VR" in r.getMessage() for r in logged)
