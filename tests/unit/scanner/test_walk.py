"""DICOM detection by content, and the walk over folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.scanner.walk import SNIFF_BYTES, iter_files, sniff
from tests.conftest import PYDICOM_DATA


def sniff_file(path: Path) -> tuple[str, str | None] | None:
    data = path.read_bytes()
    found = sniff(data[:SNIFF_BYTES], len(data))
    return None if found is None else (found.layout, found.transfer_syntax_uid)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CT_small.dcm", ("part10", None)),
        ("JPEG2000.dcm", ("part10", None)),
        ("rtstruct.dcm", ("raw", "1.2.840.10008.1.2")),
        ("no_meta.dcm", None),  # starts with a stray byte: pydicom and dcmtk cannot read it either
        ("ExplVR_LitEndNoMeta.dcm", ("raw", "1.2.840.10008.1.2.1")),
        ("ExplVR_BigEndNoMeta.dcm", ("raw", "1.2.840.10008.1.2.2")),
        ("README.txt", None),
        ("test1.json", None),
        ("zipMR.gz", None),
        ("crayons.icc", None),
    ],
)
def test_pydicom_samples_are_recognised_by_content(name: str, expected: tuple[str, str | None] | None) -> None:
    assert sniff_file(PYDICOM_DATA / "test_files" / name) == expected


def test_a_meta_group_without_preamble_is_recognised(tmp_path: Path) -> None:
    data = (PYDICOM_DATA / "test_files" / "CT_small.dcm").read_bytes()[132:]
    assert sniff(data[:SNIFF_BYTES], len(data)) is not None
    assert sniff(data[:SNIFF_BYTES], len(data)).layout == "meta-no-preamble"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "head",
    [b"", b"DICM", b"\x00" * 200, b"%PDF-1.7\n" + b"x" * 200, b"\x89PNG\r\n\x1a\n" + b"\x00" * 200,
     b"\x08\x00\x05\x00\xff\xff\xff\x7f" + b"x" * 10],  # group 0008, implicit, length past the end
)
def test_other_content_is_not_dicom(head: bytes) -> None:
    assert sniff(head[:SNIFF_BYTES], len(head)) is None


def test_iter_files_recurses_sorted_and_skips_hidden(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for rel in ("b/2", "a/deep/1", "a/0", ".hidden/x", "a/.tmpfile", "top"):
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_files([tmp_path])]
    assert found == ["top", "a/0", "a/deep/1", "b/2"]
    missing = tmp_path / "missing"
    assert list(iter_files([missing, tmp_path / "top"])) == [missing, tmp_path / "top"]
