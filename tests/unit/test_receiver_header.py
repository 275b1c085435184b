"""The header walker agrees with pydicom, and the files we write are valid DICOM files."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomflow.ingest.exceptions import MalformedDatasetError
from dicomflow.receiver.header import parse_date, read_header, study_date_of
from dicomflow.receiver.part10 import DEFLATED_EXPLICIT_VR_LE, file_header, read_file_meta
from tests.conftest import sample_files

TENANT_TAG = 0x12111217
TODAY = dt.date(2030, 1, 2)


def part10_samples() -> list[Path]:
    """pydicom's sample files that have a preamble and a readable meta group."""
    out = []
    for path in sample_files("test_files") + sample_files("charset_files"):
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue
        try:
            read_file_meta(data, 132)
        except ValueError:
            continue
        out.append(path)
    return out


def text(value: object) -> str | None:
    if value is None:
        return None
    stripped = str(value).strip(" \x00")
    return stripped or None


@pytest.mark.parametrize("path", part10_samples(), ids=lambda p: p.name)
def test_the_walker_reads_what_pydicom_reads(path: Path) -> None:
    data = path.read_bytes()
    meta, offset = read_file_meta(data, 132)
    header = read_header(data, meta.transfer_syntax_uid, tenant_tag=TENANT_TAG, offset=offset, today=TODAY)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        expected_frames = ds.get("NumberOfFrames")
        assert header.study_uid == text(ds.get("StudyInstanceUID"))
        assert header.series_uid == text(ds.get("SeriesInstanceUID"))
        assert header.sop_instance_uid == text(ds.get("SOPInstanceUID"))
        assert header.sop_class_uid == text(ds.get("SOPClassUID"))
        assert header.patient_id == (text(ds.get("PatientID")) or "")
        assert header.accession_number == text(ds.get("AccessionNumber"))
        expected_date = study_date_of(
            *(ds[k].value.encode() if k in ds and isinstance(ds[k].value, str) else None
              for k in ("StudyDate", "SeriesDate", "ContentDate")),
            today=TODAY,
        )
    assert header.study_date == expected_date
    try:
        frames = int(str(expected_frames))
    except ValueError:  # absent, or not an integer string (badVR.dcm has "1A")
        frames = 1
    assert header.number_of_frames == (frames if frames > 0 else 1)


def encode(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = syntax != ExplicitVRBigEndian
    fp.is_implicit_VR = syntax == ImplicitVRLittleEndian
    write_dataset(fp, ds)
    return fp.getvalue()


def instance(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDate = "20240305"
    ds.AccessionNumber = "ACC1"
    ds.PatientID = "PID-1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    for key, value in attrs.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian])
def test_undefined_length_sequences_before_the_wanted_tags_are_skipped(syntax: str) -> None:
    ds = instance()
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "9.9.9"  # must not be mistaken for a top-level UID
    inner.StudyInstanceUID = "9.9.9.9"
    nested = Dataset()
    nested.CodeValue = "X"
    inner.ConceptNameCodeSequence = Sequence([nested])
    inner.ConceptNameCodeSequence.is_undefined_length = True
    nested.is_undefined_length_sequence_item = True
    inner.is_undefined_length_sequence_item = True
    ds.ReferencedImageSequence = Sequence([inner, Dataset()])
    ds.ReferencedImageSequence.is_undefined_length = True
    ds.NumberOfFrames = "12"
    header = read_header(encode(ds, syntax), syntax, tenant_tag=TENANT_TAG)
    assert (header.study_uid, header.series_uid, header.sop_instance_uid) == ("1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert header.number_of_frames == 12
    assert header.accession_number == "ACC1"


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_the_tenant_tag_is_read_in_both_vr_encodings(syntax: str) -> None:
    ds = instance()
    ds.add_new(0x12110010, "LO", "DICOMFLOW")
    ds.add_new(TENANT_TAG, "LO", "hospital-a ")
    header = read_header(encode(ds, syntax), syntax, tenant_tag=TENANT_TAG)
    assert header.tenant == "hospital-a"


def test_a_deflated_data_set_is_inflated_first() -> None:
    raw = encode(instance(PatientID="DEFL"))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(raw) + compressor.flush()
    header = read_header(deflated, DEFLATED_EXPLICIT_VR_LE, tenant_tag=TENANT_TAG)
    assert header.patient_id == "DEFL"
    with pytest.raises(MalformedDatasetError, match="deflate"):
        read_header(b"not deflate at all", DEFLATED_EXPLICIT_VR_LE, tenant_tag=TENANT_TAG)


def test_non_ascii_identifiers_are_decoded_with_the_character_set() -> None:
    ds = instance(PatientID="患者-7", SpecificCharacterSet="ISO_IR 192")
    header = read_header(encode(ds), ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)
    assert header.patient_id == "患者-7"
    latin = instance(PatientID="Müller", SpecificCharacterSet="ISO_IR 100")
    latin_bytes = encode(latin).replace("Müller".encode("utf-8"), "Müller ".encode("latin-1"))
    assert read_header(latin_bytes, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG).patient_id == "Müller"


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({}, dt.date(2024, 3, 5)),
        ({"StudyDate": None, "SeriesDate": "20230102"}, dt.date(2023, 1, 2)),
        ({"StudyDate": "", "ContentDate": "20220708"}, dt.date(2022, 7, 8)),
        ({"StudyDate": "20241340", "SeriesDate": "20230102"}, dt.date(2023, 1, 2)),
        ({"StudyDate": None}, TODAY),
    ],
)
def test_study_date_falls_back_to_series_then_content_then_today(attrs: dict[str, object], expected: dt.date) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid date on purpose
        data = encode(instance(**attrs))
    assert read_header(data, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG, today=TODAY).study_date == expected


def test_parse_date_accepts_the_old_dotted_form_and_rejects_garbage() -> None:
    assert parse_date(b"2024.03.05") == dt.date(2024, 3, 5)
    assert parse_date(b"20240305 ") == dt.date(2024, 3, 5)
    for bad in (b"", b"2024", b"20240230", b"abcdefgh", None):
        assert parse_date(bad) is None


def test_missing_attributes_are_none_and_frames_default_to_one() -> None:
    header = read_header(encode(instance(StudyInstanceUID=None, PatientID=None, AccessionNumber=None)),
                         ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)
    assert header.study_uid is None
    assert header.patient_id == ""
    assert header.accession_number is None
    assert header.number_of_frames == 1
    assert header.tenant is None


def test_a_truncated_data_set_cannot_be_understood() -> None:
    data = encode(instance())
    cut = data[: data.index(b"1.2.3.4.5") - 8] + b"\x08\x00\x18\x00UI\xff\x00"  # a length past the end
    with pytest.raises(MalformedDatasetError):
        read_header(cut, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)


def test_the_written_file_is_read_back_by_pydicom(tmp_path: Path) -> None:
    body = encode(instance(), ImplicitVRLittleEndian)
    path = tmp_path / "x.dcm"
    path.write_bytes(file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", ImplicitVRLittleEndian, "MODALITY1") + body)
    ds = pydicom.dcmread(path)
    assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert ds.file_meta.MediaStorageSOPInstanceUID == "1.2.3.4.5"
    assert ds.file_meta.SourceApplicationEntityTitle == "MODALITY1"
    assert ds.SOPInstanceUID == "1.2.3.4.5"
    meta, offset = read_file_meta(path.read_bytes(), 132)
    assert meta.transfer_syntax_uid == ImplicitVRLittleEndian
    assert path.read_bytes()[offset:] == body
    # the group length covers exactly the meta elements after it
    assert ds.file_meta.FileMetaInformationGroupLength == offset - 132 - 12


@pytest.mark.skipif(shutil.which("dcmdump", path="/usr/bin") is None, reason="dcmtk not installed")
def test_the_written_file_passes_dcmtk(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", ExplicitVRLittleEndian) + encode(instance()))
    out = subprocess.run(["/usr/bin/dcmdump", "-E", str(path)], capture_output=True, text=True, check=True)
    assert "(0002,0010) UI =LittleEndianExplicit" in out.stdout
    assert "1.2.3.4.5" in out.stdout
    assert "W:" not in out.stderr and "E:" not in out.stderr
