"""The element walker and the general (pydicom) reader: same records, same verdicts.

The walker is only worth having if it can never make a record different
from the general one; these tests compare both on every sample file and on
files built to exercise the parser's corners (sequences of undefined length,
UN sequences, big endian, truncation at every byte).
"""

from __future__ import annotations

import datetime as dt
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

from dicomflow.dicom import general, walker
from dicomflow.dicom.exceptions import TruncatedError, Unsupported
from dicomflow.dicom.walker import RawHeader
from dicomflow.errors import ExtractError
from dicomflow.extract import extract_file, records
from dicomflow.models import DicomImageMeta, DicomStateMeta
from tests.conftest import PYDICOM_DATA, sample_files
from tests.unit.dicom_files import ct_dataset, nested_sequences, undefined_lengths, write

RECEIVED = dt.datetime(2024, 5, 6, 7, 8, 9)
ALL_SAMPLES = sample_files("test_files") + sample_files("charset_files")
Reader = Callable[[str], RawHeader]


def _records(reader: Reader, path: Path) -> tuple[DicomStateMeta, DicomImageMeta] | str:
    """Records through one reader, or the error class and reason it ends with."""
    try:
        return records.build(reader(str(path)), str(path), "acme", RECEIVED)
    except TruncatedError:
        return "truncated"
    except ExtractError as exc:
        return f"ExtractError: {exc.reason}"


def _fast_applies(path: Path) -> bool:
    try:
        walker.read_file(str(path))
    except Unsupported:
        return False
    except TruncatedError:
        return True
    return True


FAST_SAMPLES = [p for p in ALL_SAMPLES if _fast_applies(p)]


@pytest.mark.parametrize("path", FAST_SAMPLES, ids=lambda p: str(p.relative_to(PYDICOM_DATA)))
def test_fast_and_general_readers_give_identical_records(path: Path) -> None:
    assert _records(walker.read_file, path) == _records(general.read_file, path)


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "liver_1frame.dcm",
        "rtdose.dcm",
        "rtplan.dcm",
        "UN_sequence.dcm",
        "nested_priv_SQ.dcm",
        "waveform_ecg.dcm",
        "MR_truncated.dcm",
        "rtplan_truncated.dcm",
    ],
)
def test_fast_reader_takes_the_common_files(name: str) -> None:
    """The fallback must stay the exception: these files never need pydicom."""
    assert _fast_applies(PYDICOM_DATA / "test_files" / name)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("no_meta.dcm", "DICM"),
        ("rtstruct.dcm", "DICM"),  # raw implicit VR dataset
        ("image_dfl.dcm", "1.2.840.10008.1.2.1.99"),  # deflated
        ("meta_missing_tsyntax.dcm", "transfer syntax"),
        ("SC_rgb_jpeg.dcm", "encoding differs"),  # meta says explicit, data is implicit
    ],
)
def test_fast_reader_declines_what_it_does_not_handle(name: str, why: str) -> None:
    with pytest.raises(Unsupported, match=why):
        walker.read_file(str(PYDICOM_DATA / "test_files" / name))


@pytest.mark.parametrize("syntax", ["explicit", "implicit", "big"])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined-length", "undefined-length"])
def test_nested_sequences_are_skipped_identically(tmp_path: Path, syntax: str, undefined: bool) -> None:
    ds = ct_dataset(**nested_sequences())
    if undefined:
        undefined_lengths(ds)
    path = write(tmp_path / "nested.dcm", ds, syntax=syntax)

    header = walker.read_file(str(path))  # no Unsupported: the fast reader handles it
    assert _records(walker.read_file, path) == _records(general.read_file, path)
    state, image = extract_file(path, "acme", received=RECEIVED)
    assert (state.modality, image.width, image.columns, image.window_center) == ("CT", 4, 2, "40")
    assert header.little_endian is (syntax != "big")


def _un_sequence_file(tmp_path: Path) -> Path:
    """Explicit VR file with a private UN element of undefined length (implicit VR items, PS3.5 6.2.2)."""
    base = write(tmp_path / "base.dcm", ct_dataset(PixelData=None), syntax="explicit").read_bytes()
    creator = struct.pack("<HH2sH", 0x0029, 0x0010, b"LO", 4) + b"ACME"
    inner = struct.pack("<HHI", 0x0029, 0x1011, 4) + b"abcd"
    item_ = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner + struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    un = (
        struct.pack("<HH2sHI", 0x0029, 0x1010, b"UN", 0, 0xFFFFFFFF)
        + item_
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    pixels = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 16) + b"\x00\x01" * 8
    path = tmp_path / "un.dcm"
    path.write_bytes(base + creator + un + pixels)
    return path


def test_un_sequence_of_undefined_length_is_skipped(tmp_path: Path) -> None:
    path = _un_sequence_file(tmp_path)
    assert _fast_applies(path)
    assert _records(walker.read_file, path) == _records(general.read_file, path)
    assert extract_file(path, "acme").image.space_size == path.stat().st_size


def _element_spans(path: Path) -> list[tuple[int, int]]:
    """(header start, value end) of each defined-length top-level element up to Pixel Data, from pydicom.

    Elements after Pixel Data (trailing padding) are outside what extraction reads.
    """
    with open(path, "rb") as fp:
        ds = pydicom.dcmread(fp, defer_size=0)
        spans = []
        for tag in ds.keys():  # noqa: SIM118 - iterating a pydicom Dataset yields elements; keys() yields tags
            if tag > 0x7FE00010:
                break
            elem = ds.get_item(tag, keep_deferred=True)
            if isinstance(elem, pydicom.dataelem.RawDataElement) and elem.length != 0xFFFFFFFF:
                long_vr = not elem.is_implicit_VR and elem.VR in ("OB", "OW", "OF", "SQ", "UN", "UT", "UC", "UR")
                spans.append((elem.value_tell - (12 if long_vr else 8), elem.value_tell + elem.length))
    return spans


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm"])
@pytest.mark.parametrize("reader", [walker.read_file, general.read_file], ids=["fast", "general"])
def test_a_file_cut_inside_any_element_is_truncated(tmp_path: Path, name: str, reader: Reader) -> None:
    """Cut anywhere strictly inside an element (header or value): always refused, never half-read."""
    whole = (PYDICOM_DATA / "test_files" / name).read_bytes()
    spans = _element_spans(PYDICOM_DATA / "test_files" / name)
    cuts = sorted(
        {start + 1 for start, _ in spans}
        | {(start + end) // 2 for start, end in spans}
        | {end - 1 for start, end in spans if end - start > 1}
    )
    cut_file = tmp_path / "cut.dcm"
    for cut in cuts:
        cut_file.write_bytes(whole[:cut])
        with pytest.raises(TruncatedError):
            reader(str(cut_file))


def test_a_truncated_file_is_an_extract_error_with_the_path(tmp_path: Path) -> None:
    whole = (PYDICOM_DATA / "test_files" / "CT_small.dcm").read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(whole[: len(whole) - 1000])  # inside Pixel Data
    with pytest.raises(ExtractError) as caught:
        extract_file(path, "acme")
    assert caught.value.path == str(path)
    assert caught.value.reason.startswith("truncated file: Pixel Data needs 32768 bytes")


@pytest.mark.parametrize("reader", [walker.read_file, general.read_file], ids=["fast", "general"])
def test_pixel_data_is_never_read_into_memory(tmp_path: Path, reader: Reader) -> None:
    """A 256 MiB Pixel Data element: extraction allocates a few KiB, not the pixels."""
    pixels = 256 * 1024 * 1024
    head = write(tmp_path / "head.dcm", ct_dataset(PixelData=None, Rows=8192, Columns=16384)).read_bytes()
    path = tmp_path / "big.dcm"
    with open(path, "wb") as out:
        out.write(head + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixels))
        out.truncate(len(head) + 12 + pixels)  # sparse: no disk used
    tracemalloc.start()
    try:
        header = reader(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert header.file_size == len(head) + 12 + pixels
    assert peak < 2 * 1024 * 1024


def test_records_equal_whatever_the_encoding(tmp_path: Path) -> None:
    """The same header written in each transfer syntax, with or without file meta, gives the same records."""
    seen = {}
    for syntax in ("explicit", "implicit", "big"):
        for meta in (True, False):
            path = write(tmp_path / f"{syntax}-{meta}.dcm", ct_dataset(**nested_sequences()), syntax=syntax, meta=meta)
            state, image = extract_file(path, "acme", received=RECEIVED)
            seen[(syntax, meta)] = (
                state,
                msgspec_replace(image, transfer_syntax_uid="", pixel_data_location="", space_size=0),
            )
            expected_ts = {"explicit": "1.2.840.10008.1.2.1", "implicit": "1.2.840.10008.1.2", "big": "1.2.840.10008.1.2.2"}
            assert image.transfer_syntax_uid == expected_ts[syntax]
    assert len(set(map(repr, seen.values()))) == 1


def msgspec_replace(image: DicomImageMeta, **changes: object) -> DicomImageMeta:
    import msgspec

    return msgspec.structs.replace(image, **changes)
