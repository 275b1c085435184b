"""What ingest reads from a data set (the one walker and decoder) agrees with pydicom; the files it writes are valid DICOM."""

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

from dicomflow.dicom.constants import DEFLATED_EXPLICIT_VR_LE
from dicomflow.dicom.derived import InstanceHeader
from dicomflow.dicom.part10 import file_header, read_file_meta
from dicomflow.dicom.values import parse_date
from dicomflow.ingest.exceptions import MalformedDatasetError, MissingAttributeError
from dicomflow.ingest.ingestor import Ingestor
from dicomflow.models import now
from dicomflow.settings import IngestSettings, StorageSettings
from tests.conftest import sample_files

TENANT_TAG = 0x12111217
_INGESTOR = Ingestor(StorageSettings(root=Path("/nonexistent-root")), IngestSettings(), "node-1")


def read_header(data: bytes, syntax: str, *, tenant_tag: int = TENANT_TAG, offset: int = 0) -> InstanceHeader:
    """What ingest reads from a C-STORE data set (the receiver's and the publisher's one way)."""
    assert tenant_tag == _INGESTOR.tenant_tag
    return _INGESTOR.read(data, syntax, offset=offset)


def first_date(ds: Dataset, *keywords: str) -> dt.date | None:
    """The first of ``keywords`` holding a valid date, parsed as the one value decoder does."""
    for keyword in keywords:
        value = ds.get(keyword)
        if isinstance(value, str) and value:
            try:
                parsed = parse_date(value.split("\\")[0])
            except ValueError:
                continue
            if parsed is not None:
                return parsed
    return None


def part10_samples() -> list[Path]:
    """pydicom's sample files that have a preamble and a readable meta group, and that ingest accepts."""
    out = []
    for path in sample_files("test_files") + sample_files("charset_files"):
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue
        try:
            meta, offset = read_file_meta(data, 132)
            read_header(data, meta.transfer_syntax_uid, offset=offset)
        except ValueError:
            continue
        except Exception as exc:
            if type(exc).__module__.startswith("dicomflow.ingest"):
                continue
            raise
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
    before = now()
    header = read_header(data, meta.transfer_syntax_uid, tenant_tag=TENANT_TAG, offset=offset)
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
        expected_date = first_date(ds, "StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate")
    assert before <= header.received <= now()
    assert header.study_date == (expected_date or header.received.date())
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


def test_a_deflated_data_set_is_read_as_the_consumer_reads_it() -> None:
    raw = encode(instance(PatientID="DEFL"))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = compressor.compress(raw) + compressor.flush()
    header = read_header(deflated, DEFLATED_EXPLICIT_VR_LE, tenant_tag=TENANT_TAG)
    assert header.patient_id == "DEFL"
    with pytest.raises(MalformedDatasetError, match="not a readable DICOM file"):
        read_header(b"not deflate at all", DEFLATED_EXPLICIT_VR_LE, tenant_tag=TENANT_TAG)


def test_non_ascii_identifiers_are_decoded_with_the_character_set() -> None:
    ds = instance(PatientID="患者-7", SpecificCharacterSet="ISO_IR 192")
    header = read_header(encode(ds), ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)
    assert header.patient_id == "患者-7"
    latin = instance(PatientID="Müller", SpecificCharacterSet="ISO_IR 100")
    latin_bytes = encode(latin).replace("Müller".encode(), "Müller ".encode("latin-1"))
    assert read_header(latin_bytes, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG).patient_id == "Müller"


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({}, dt.date(2024, 3, 5)),
        ({"StudyDate": None, "SeriesDate": "20230102"}, dt.date(2023, 1, 2)),
        ({"StudyDate": "", "ContentDate": "20220708"}, dt.date(2022, 7, 8)),
        ({"StudyDate": "20241340", "SeriesDate": "20230102"}, dt.date(2023, 1, 2)),
        ({"StudyDate": None, "AcquisitionDate": "20210304"}, dt.date(2021, 3, 4)),
        ({"StudyDate": None, "AcquisitionDate": "20210304", "ContentDate": "20220708"}, dt.date(2022, 7, 8)),
        ({"StudyDate": "2024.03.05"}, dt.date(2024, 3, 5)),
        ({"StudyDate": "20240305\\20240306"}, dt.date(2024, 3, 5)),
        ({"StudyDate": None}, None),
    ],
)
def test_study_date_falls_back_to_series_content_acquisition_then_the_receipt(
    attrs: dict[str, object], expected: dt.date | None,
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid date on purpose
        data = encode(instance(**attrs))
    header = read_header(data, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)
    assert header.study_date == (expected or header.received.date())


def test_parse_date_accepts_the_old_dotted_form_and_rejects_garbage() -> None:
    assert parse_date("2024.03.05") == dt.date(2024, 3, 5)
    assert parse_date("20240305 ") == dt.date(2024, 3, 5)
    assert parse_date("") is None
    for bad in ("2024", "20240230", "abcdefgh"):
        with pytest.raises(ValueError):
            parse_date(bad)


@pytest.mark.parametrize(
    ("missing", "name"),
    [("StudyInstanceUID", "Study Instance UID"), ("SeriesInstanceUID", "Series Instance UID"),
     ("SOPInstanceUID", "SOP Instance UID"), ("SOPClassUID", "SOP Class UID")],
)
def test_a_data_set_without_a_required_uid_is_refused(missing: str, name: str) -> None:
    """The consumer indexes the data set's UIDs, so the data set must have them (not just the request)."""
    with pytest.raises(MissingAttributeError, match=f"{name} \\(required\\) is missing or empty"):
        read_header(encode(instance(**{missing: None})), ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)


def test_missing_optional_attributes_are_none_and_frames_default_to_one() -> None:
    header = read_header(encode(instance(PatientID=None, AccessionNumber=None)),
                         ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)
    assert header.patient_id == ""
    assert header.accession_number is None
    assert header.number_of_frames == 1
    assert header.tenant is None


def test_a_truncated_data_set_cannot_be_understood() -> None:
    data = encode(instance())
    cut = data[: data.index(b"1.2.3.4.5") - 8] + b"\x08\x00\x18\x00UI\xff\x00"  # a length past the end
    with pytest.raises(MalformedDatasetError, match=r"truncated file: element \(0008,0018\) needs 255 bytes"):
        read_header(cut, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)


def test_pixel_data_cut_short_is_refused_with_its_offsets() -> None:
    """The walker reads the Pixel Data header: a data set shorter than it claims is refused."""
    data = encode(instance()) + b"\xe0\x7f\x10\x00OW\x00\x00" + (64).to_bytes(4, "little") + b"\x00" * 10
    with pytest.raises(MalformedDatasetError, match=r"truncated file: Pixel Data needs 64 bytes at byte \d+; the file has 10"):
        read_header(data, ExplicitVRLittleEndian, tenant_tag=TENANT_TAG)


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


def test_the_written_file_passes_dcmtk(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(file_header("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", ExplicitVRLittleEndian) + encode(instance()))
    dcmdump = shutil.which("dcmdump")
    assert dcmdump is not None, "dcmtk's dcmdump is not installed: run scripts/bootstrap.sh"
    out = subprocess.run([dcmdump, "-E", str(path)], capture_output=True, text=True, check=True)
    assert "(0002,0010) UI =LittleEndianExplicit" in out.stdout
    assert "1.2.3.4.5" in out.stdout
    assert "W:" not in out.stderr and "E:" not in out.stderr
