"""Record building on files written for the purpose: fallbacks, limits, bad values, odd inputs."""

from __future__ import annotations

import datetime as dt
import logging
import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest

from dicomflow.errors import ExtractError, is_poison
from dicomflow.extract import Extracted, extract_file
from dicomflow.models import DicomImageMeta, DicomStateMeta, decode, encode, uid_hash
from tests.unit.dicom_files import SERIES_UID, STUDY_UID, Raw, ct_dataset, write

RECEIVED = dt.datetime(2024, 5, 6, 7, 8, 9, 250000)


def extract(tmp_path: Path, syntax: str = "explicit", meta: bool = True, **attrs: Any) -> Extracted:
    path = write(tmp_path / "f.dcm", ct_dataset(**attrs), syntax=syntax, meta=meta)
    return extract_file(path, "acme", received=RECEIVED)


# --------------------------------------------------------------------------- every field


def test_every_field_of_a_ct_header(tmp_path: Path) -> None:
    path = write(
        tmp_path / "f.dcm",
        ct_dataset(
            PatientBirthDate="19700203",
            PatientBirthTime="0830",
            PatientAge="054Y",
            PatientSize="1.82",
            PatientWeight="80.5",
            AccessionNumber="ACC-9",
            StudyID="S1",
            StudyDescription="CT Chest",
            SeriesTime="101600.5",
            SeriesDescription="Axial 2.5mm",
            BodyPartExamined="CHEST",
            ProtocolName="Chest routine",
            ContentTime="101700.123456",
            ImageOrientationPatient=["1", "0", "0", "0", "1", "0"],
            SpacingBetweenSlices="2.5",
            SliceLocation="-10.5",
            RescaleType="HU",
            WindowCenter=["40", "400"],
            WindowWidth=["400", "2000"],
        ),
    )
    state, image = extract_file(path, "acme", received=RECEIVED)
    assert state == DicomStateMeta(
        tenant_id="acme",
        patient_id="P-1",
        study_uid=STUDY_UID,
        series_uid=SERIES_UID,
        study_uid_hash=uid_hash(STUDY_UID),
        series_uid_hash=uid_hash(SERIES_UID),
        study_date_origin="20240102",
        patient_name="Doe^John",
        patient_sex="M",
        patient_birth_date=dt.date(1970, 2, 3),
        patient_birth_time=dt.time(8, 30),
        patient_age="054Y",
        patient_size=1.82,
        patient_weight=80.5,
        study_date=dt.date(2024, 1, 2),
        study_time=dt.time(10, 15),
        accession_number="ACC-9",
        study_id="S1",
        study_description="CT Chest",
        modality="CT",
        series_number=3,
        series_date=dt.date(2024, 1, 3),
        series_time=dt.time(10, 16, 0, 500000),
        series_description="Axial 2.5mm",
        body_part_examined="CHEST",
        protocol_name="Chest routine",
        series_related_instances=None,
        created_time=RECEIVED,
        updated_time=RECEIVED,
    )
    assert image == DicomImageMeta(
        tenant_id="acme",
        patient_id="P-1",
        study_uid=STUDY_UID,
        series_uid=SERIES_UID,
        sop_uid="1.2.826.0.1.3680043.8.498.1.1.1",
        study_uid_hash=uid_hash(STUDY_UID),
        series_uid_hash=uid_hash(SERIES_UID),
        instance_number=7,
        content_date=dt.date(2024, 1, 4),
        content_time=dt.time(10, 17, 0, 123456),
        image_type="ORIGINAL\\PRIMARY\\AXIAL",
        image_orientation_patient="1\\0\\0\\0\\1\\0",
        image_position_patient="-125.0\\-125.0\\10.5",
        slice_thickness=2.5,
        spacing_between_slices=2.5,
        slice_location=-10.5,
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        width=4,
        columns=2,
        bits_allocated=16,
        bits_stored=12,
        high_bit=11,
        pixel_representation=0,
        rescale_intercept=-1024.0,
        rescale_slope=1.0,
        rescale_type="HU",
        window_center="40\\400",
        window_width="400\\2000",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        pixel_data_location=str(path),
        thumbnail_location=None,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        image_status="ACTIVE",
        space_size=path.stat().st_size,
        created_time=RECEIVED,
        updated_time=RECEIVED,
    )


def test_records_survive_the_wire_format_and_a_process_boundary(tmp_path: Path) -> None:
    """What the consumer's worker processes return must pickle, encode and decode unchanged."""
    extracted = extract(tmp_path)
    assert pickle.loads(pickle.dumps(extracted)) == extracted
    assert decode(encode(extracted.state), DicomStateMeta) == extracted.state
    assert decode(encode(extracted.image), DicomImageMeta) == extracted.image


def test_received_defaults_to_now(tmp_path: Path) -> None:
    path = write(tmp_path / "f.dcm", ct_dataset())
    before = dt.datetime.now()
    state, image = extract_file(str(path), "acme")
    assert before <= state.created_time == state.updated_time == image.created_time <= dt.datetime.now()
    assert state.created_time.tzinfo is None


# --------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ({}, dt.date(2024, 1, 2)),
        ({"StudyDate": None}, dt.date(2024, 1, 3)),
        ({"StudyDate": None, "SeriesDate": None}, dt.date(2024, 1, 4)),
        ({"StudyDate": None, "SeriesDate": None, "ContentDate": None}, dt.date(2024, 1, 5)),
        ({"StudyDate": None, "SeriesDate": None, "ContentDate": None, "AcquisitionDate": None}, RECEIVED.date()),
        ({"StudyDate": "", "SeriesDate": ""}, dt.date(2024, 1, 4)),
    ],
    ids=["study", "series", "content", "acquisition", "receipt", "empty-values"],
)
def test_study_date_fallbacks(tmp_path: Path, dates: dict[str, Any], expected: dt.date) -> None:
    state, _ = extract(tmp_path, **dates)
    assert state.study_date == expected
    assert state.study_date_origin == ("20240102" if "StudyDate" not in dates else "")


def test_invalid_study_date_falls_back_keeps_the_origin_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="dicomflow")
    state, _ = extract(tmp_path, StudyDate=Raw("20231345"))
    assert state.study_date == dt.date(2024, 1, 3)  # SeriesDate
    assert state.study_date_origin == "20231345"  # what the file had
    [record] = [r for r in caplog.records if "(0008,0020) StudyDate" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert str(tmp_path / "f.dcm") in record.getMessage()


@pytest.mark.parametrize("patient_id", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_missing_patient_id_is_an_empty_string(tmp_path: Path, patient_id: str | None) -> None:
    state, image = extract(tmp_path, PatientID=patient_id)
    assert state.patient_id == image.patient_id == ""


# --------------------------------------------------------------------------- invalid values


def test_invalid_values_become_null_with_warnings_that_name_no_patient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomflow")
    state, image = extract(
        tmp_path,
        PatientName="Secretname^Person",
        PatientBirthDate=Raw("19991399"),
        PatientWeight=Raw("heavy "),
        StudyTime=Raw("2599"),
        SeriesNumber=Raw("1.5 "),
        InstanceNumber=Raw("99999999999 "),
        SliceThickness=Raw("nan "),
        ContentTime=Raw("10:7"),
    )
    assert state.patient_name == "Secretname^Person"
    assert (state.patient_birth_date, state.patient_weight, state.study_time, state.series_number) == (None,) * 4
    assert (image.instance_number, image.slice_thickness, image.content_time) == (None, None, None)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    for tag in ("(0010,0030)", "(0010,1030)", "(0008,0030)", "(0020,0011)", "(0020,0013)", "(0018,0050)", "(0008,0033)"):
        assert any(tag in m and str(tmp_path) in m for m in messages), tag
    everything = " ".join(r.getMessage() for r in caplog.records)
    assert "Secretname" not in everything
    assert "19991399" not in everything and "heavy" not in everything  # patient values stay out of logs
    assert "2599" in everything  # other values help whoever fixes the modality


def test_several_values_where_one_is_expected_keep_the_first(tmp_path: Path) -> None:
    _, image = extract(tmp_path, SliceThickness=["1.25", "2.5"], InstanceNumber=["4", "5"])
    assert (image.slice_thickness, image.instance_number) == (1.25, 4)


def test_person_names_lose_trailing_empty_components(tmp_path: Path) -> None:
    assert extract(tmp_path, PatientName="Doe^John^^^").state.patient_name == "Doe^John"
    assert extract(tmp_path, PatientName="^^^^").state.patient_name is None
    assert extract(tmp_path, PatientName="Yamada^Tarou=^=").state.patient_name == "Yamada^Tarou"


# --------------------------------------------------------------------------- required UIDs


@pytest.mark.parametrize(
    ("keyword", "tag"),
    [
        ("StudyInstanceUID", "(0020,000D)"),
        ("SeriesInstanceUID", "(0020,000E)"),
        ("SOPInstanceUID", "(0008,0018)"),
        ("SOPClassUID", "(0008,0016)"),
    ],
)
@pytest.mark.parametrize("value", [None, ""], ids=["absent", "empty"])
def test_missing_required_uid_is_an_error_naming_it(tmp_path: Path, keyword: str, tag: str, value: str | None) -> None:
    with pytest.raises(ExtractError) as caught:
        extract(tmp_path, **{keyword: value})
    assert caught.value.path == str(tmp_path / "f.dcm")
    assert caught.value.reason == f"required attribute missing or empty: {tag} {keyword}"
    assert is_poison(caught.value)


@pytest.mark.parametrize("uid", ["1." * 40 + "1", "1.2\\1.3", "1.2\x013"], ids=["too-long", "multi", "control"])
def test_unusable_uid_is_an_error(tmp_path: Path, uid: str) -> None:
    with pytest.raises(ExtractError, match=r"\(0020,000D\) StudyInstanceUID is not a valid UID"):
        extract(tmp_path, StudyInstanceUID=uid)


# --------------------------------------------------------------------------- limits and charsets


def test_long_texts_are_cut_on_character_boundaries(tmp_path: Path) -> None:
    state, image = extract(
        tmp_path,
        SpecificCharacterSet="ISO_IR 192",
        PatientName="王" * 40,  # 120 bytes in UTF-8
        StudyDescription="é" * 64,  # 128 bytes
        SeriesDescription="脑" * 100,  # 300 bytes, limit 256
        AccessionNumber="A" * 20,  # limit 16
        ImageType=["DERIVED"] * 30,
    )
    assert state.patient_name == "王" * 21  # 63 bytes: a 22nd character would need 66
    assert state.study_description == "é" * 32
    assert state.series_description == "脑" * 85
    assert state.accession_number == "A" * 16
    assert image.image_type is not None and len(image.image_type.encode()) <= 128
    assert image.image_type.startswith("DERIVED\\DERIVED")


@pytest.mark.parametrize(
    ("charset", "name"),
    [
        ("ISO_IR 100", "Müller^Jürgen"),
        ("ISO_IR 101", "Dvořák^Antonín"),
        ("ISO_IR 144", "Чайковский^Пётр"),
        ("ISO_IR 126", "Διονυσιος"),
        ("ISO_IR 127", "قباني^لنزار"),
        ("ISO_IR 138", "שרון^דבורה"),
        ("ISO_IR 192", "Wang^XiaoDong=王^小東"),
        ("GB18030", "Wang^XiaoDong=王^小东"),
        (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
        (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    ],
)
def test_names_round_trip_through_each_character_set(tmp_path: Path, charset: Any, name: str) -> None:
    """pydicom encodes the name with the charset; extraction must decode it back exactly."""
    state, _ = extract(tmp_path, SpecificCharacterSet=charset, PatientName=name, StudyDescription=name.split("=")[-1])
    assert state.patient_name == name
    assert state.study_description == name.split("=")[-1]


def test_unknown_character_set_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dicomflow")
    state, _ = extract(tmp_path, SpecificCharacterSet="ISO_IR 999", PatientName="Doe^Jane")
    assert state.patient_name == "Doe^Jane"
    assert any("ISO_IR 999" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- encodings


@pytest.mark.parametrize(
    ("syntax", "meta", "expected"),
    [
        ("implicit", True, "1.2.840.10008.1.2"),
        ("big", True, "1.2.840.10008.1.2.2"),
        ("implicit", False, "1.2.840.10008.1.2"),
        ("explicit", False, "1.2.840.10008.1.2.1"),
        ("big", False, "1.2.840.10008.1.2.2"),
    ],
)
def test_transfer_syntax_from_meta_or_from_the_encoding(tmp_path: Path, syntax: str, meta: bool, expected: str) -> None:
    state, image = extract(tmp_path, syntax=syntax, meta=meta, Rows=512, Columns=256)
    assert image.transfer_syntax_uid == expected
    assert (image.width, image.columns, image.bits_allocated) == (512, 256, 16)
    assert state.patient_name == "Doe^John"


# --------------------------------------------------------------------------- not usable at all


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a DICOM file"),
        (b"hello, world\n", "not a DICOM file"),
        (b"\x00" * 128 + b"DICM", "required attribute missing"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x00", "truncated file"),
    ],
    ids=["empty", "text", "meta-only", "cut-in-meta"],
)
def test_unusable_files_are_errors_with_a_reason(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.dcm"
    path.write_bytes(content)
    with pytest.raises(ExtractError) as caught:
        extract_file(path, "acme")
    assert reason in caught.value.reason
    assert caught.value.path == str(path)


def test_missing_file_and_folder_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="No such file"):
        extract_file(tmp_path / "nope.dcm", "acme")
    with pytest.raises(ExtractError, match="Is a directory"):
        extract_file(tmp_path, "acme")


def test_extracted_is_a_named_pair(tmp_path: Path) -> None:
    extracted = extract(tmp_path)
    state, image = extracted
    assert (extracted.state, extracted.image) == (state, image)
    assert msgspec.structs.asdict(state)["series_related_instances"] is None
