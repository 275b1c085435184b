"""Extraction checked against dcmtk's ``dcmdump``: a second, independent DICOM parser (C++).

dcmdump prints each top-level element as ``(gggg,eeee) VR [value]`` (or a bare
number for binary VRs); with ``+U8`` it converts text to UTF-8 using the
file's Specific Character Set. The records must agree with it field by field.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest

from dicomflow.extract import extract_file
from tests.conftest import PYDICOM_DATA

DCMDUMP = Path("/usr/bin/dcmdump")


@pytest.fixture(autouse=True)
def _dcmdump_installed() -> None:
    """scripts/bootstrap.sh installs dcmtk: without it these comparisons fail, they do not skip."""
    if not DCMDUMP.exists():
        pytest.fail(f"dcmtk's dcmdump is not installed at {DCMDUMP}: run scripts/bootstrap.sh (apt-get install dcmtk)")


FILES = [
    "test_files/CT_small.dcm",
    "test_files/MR_small_bigendian.dcm",
    "test_files/MR_small_implicit.dcm",
    "test_files/ExplVR_BigEnd.dcm",
    "test_files/JPEG2000.dcm",
    "test_files/rtdose.dcm",
    "test_files/liver_1frame.dcm",
    "test_files/dicomdirtests/77654033/CT2/17106",
    "test_files/dicomdirtests/98892003/MR700/4467",
    "charset_files/chrGreek.dcm",
    "charset_files/chrRuss.dcm",
    "charset_files/chrKoreanMulti.dcm",
    "charset_files/chrI2.dcm",
    "charset_files/chrX2.dcm",
]

_LINE = re.compile(r"^\(([0-9a-f]{4}),([0-9a-f]{4})\) (\w\w) (.*?)\s+#\s*\d+,\s*\d+ \w+$")


def dcmdump(path: Path) -> dict[str, tuple[str, str | None]]:
    """Top-level elements (and file meta) as ``"GGGG,EEEE" -> (VR, text or None)``."""
    out = subprocess.run(
        [str(DCMDUMP), "-q", "-Un", "+L", "+U8", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    elements: dict[str, tuple[str, str | None]] = {}
    for line in out.splitlines():
        match = _LINE.match(line)  # nested items are indented, so they never match
        if match is None:
            continue
        group, element, vr, shown = match.groups()
        if shown.startswith("["):
            value: str | None = shown[1 : shown.rindex("]")]
        elif shown.startswith("(no value"):
            value = None
        else:
            value = shown.strip()
        elements[f"{group},{element}".upper()] = (vr, value)
    return elements


def text(dump: dict[str, tuple[str, str | None]], tag: str) -> str | None:
    value = dump.get(tag, ("", None))[1]
    return value.strip() or None if value is not None else None


def number(dump: dict[str, tuple[str, str | None]], tag: str) -> float | None:
    value = text(dump, tag)
    return float(value.split("\\")[0]) if value else None


def date(dump: dict[str, tuple[str, str | None]], tag: str) -> dt.date | None:
    value = text(dump, tag)
    return dt.datetime.strptime(value.replace(".", ""), "%Y%m%d").date() if value else None


def clock(dump: dict[str, tuple[str, str | None]], tag: str) -> dt.time | None:
    value = text(dump, tag)
    if not value:
        return None
    value = value.replace(":", "")
    fmt = "%H%M%S.%f" if "." in value else {2: "%H", 4: "%H%M", 6: "%H%M%S"}[len(value)]
    return dt.datetime.strptime(value, fmt).time()


@pytest.mark.parametrize("name", FILES)
def test_records_agree_with_dcmdump(name: str) -> None:
    path = PYDICOM_DATA / name
    dump = dcmdump(path)
    state, image = extract_file(path, "acme")

    assert state.study_uid == text(dump, "0020,000D")
    assert state.series_uid == text(dump, "0020,000E")
    assert image.sop_uid == text(dump, "0008,0018")
    assert image.sop_class_uid == text(dump, "0008,0016")
    assert image.transfer_syntax_uid == text(dump, "0002,0010")
    assert state.patient_id == (text(dump, "0010,0020") or "")
    assert state.patient_name == (text(dump, "0010,0010") or "").rstrip("=^") or None
    assert state.study_description == text(dump, "0008,1030")
    assert state.series_description == text(dump, "0008,103E")
    assert state.modality == text(dump, "0008,0060")
    assert state.study_date_origin == (text(dump, "0008,0020") or "").replace(".", "")[:8]
    if date(dump, "0008,0020") is not None:
        assert state.study_date == date(dump, "0008,0020")
    assert state.study_time == clock(dump, "0008,0030")
    assert state.series_date == date(dump, "0008,0021")
    assert image.content_date == date(dump, "0008,0023")
    assert image.content_time == clock(dump, "0008,0033")
    assert state.series_number == (int(number(dump, "0020,0011") or 0) if text(dump, "0020,0011") else None)
    assert image.instance_number == (int(number(dump, "0020,0013") or 0) if text(dump, "0020,0013") else None)
    assert image.image_type == text(dump, "0008,0008")
    assert image.image_position_patient == text(dump, "0020,0032")
    assert image.image_orientation_patient == text(dump, "0020,0037")
    assert image.window_center == text(dump, "0028,1050")
    assert image.window_width == text(dump, "0028,1051")
    assert image.slice_thickness == number(dump, "0018,0050")
    assert image.slice_location == number(dump, "0020,1041")
    assert image.rescale_intercept == number(dump, "0028,1052")
    assert image.rescale_slope == number(dump, "0028,1053")
    assert image.photometric_interpretation == text(dump, "0028,0004")
    for field, tag in [
        ("samples_per_pixel", "0028,0002"),
        ("width", "0028,0010"),
        ("columns", "0028,0011"),
        ("bits_allocated", "0028,0100"),
        ("bits_stored", "0028,0101"),
        ("high_bit", "0028,0102"),
        ("pixel_representation", "0028,0103"),
    ]:
        shown = text(dump, tag)
        assert getattr(image, field) == (int(shown) if shown else None), field
    assert image.space_size == path.stat().st_size
