"""The header by ranged reads (:func:`dicomflow.dicom.reader.read_blob`) against the local file reader.

The store is the filesystem backend (the same ranged-read contract as S3):
every bundled sample file the walker reads must give the same header either
way, from few bytes, and a truncated object the same verdict.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomflow.blobs import BlobNotFound, FilesystemStore
from dicomflow.dicom import reader
from dicomflow.dicom.exceptions import UnreadableDicom

SAMPLES = sorted((Path(pydicom.__file__).parent / "data" / "test_files").glob("*.dcm"))


def _readable(path: Path) -> bool:
    try:
        reader.read_file(str(path))
    except UnreadableDicom:
        return False
    return True


def test_same_header_as_the_file_reader(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=False)
    compared = 0
    for path in SAMPLES:
        if not _readable(path):
            continue
        store.put(path.name, path.read_bytes())
        fetched: list[int] = []
        by_ranges = reader.read_blob(store, path.name, fetched=fetched)
        whole = reader.read_file(str(path))
        assert (by_ranges.transfer_syntax_uid, by_ranges.elements) == (whole.transfer_syntax_uid, whole.elements), path
        compared += 1
    assert compared >= 20


def test_a_header_costs_one_read_of_head_bytes(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=False)
    source = next(p for p in SAMPLES if p.name == "CT_small.dcm")
    store.put("ct.dcm", source.read_bytes())
    fetched: list[int] = []
    reader.read_blob(store, "ct.dcm", fetched=fetched)
    assert fetched == [reader.HEAD_BYTES] or (len(fetched) == 1 and fetched[0] == source.stat().st_size)


def test_truncated_object_is_unreadable_and_missing_is_not_found(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=False)
    source = next(p for p in SAMPLES if p.name == "CT_small.dcm").read_bytes()
    store.put("cut.dcm", source[:600])  # inside the header
    (tmp_path / "cut-file.dcm").write_bytes(source[:600])
    with pytest.raises(UnreadableDicom) as from_file:
        reader.read_file(str(tmp_path / "cut-file.dcm"))
    with pytest.raises(UnreadableDicom) as from_ranges:
        reader.read_blob(store, "cut.dcm")
    assert from_ranges.value.reason == from_file.value.reason
    with pytest.raises(BlobNotFound):
        reader.read_blob(store, "absent.dcm")


def test_read_head_gives_the_size(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=False)
    store.put("a", b"0123456789")
    assert store.read_head("a", 4) == (b"0123", 10)
    assert store.read_head("a", 100) == (b"0123456789", 10)
    store.put("empty", b"")
    assert store.read_head("empty", 4) == (b"", 0)
