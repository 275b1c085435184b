"""Headers and frames read by ranges: the same dataset and frames as a whole read, with few requests."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pydicom
import pytest

from dicomflow.blobs import FilesystemStore
from dicomflow.blobs.ranged import RangedFile
from dicomflow.corpus import pydicom_sample
from dicomflow.web.blobio import Blob
from dicomflow.web.frames import read_frames
from dicomflow.web.negotiation import parse_accept


def _stored(tmp_path: Path, name: str) -> tuple[FilesystemStore, str, Path]:
    source = pydicom_sample(name)
    store = FilesystemStore(tmp_path, fsync=False)
    key = f"t/{name}"
    (tmp_path / "t").mkdir(exist_ok=True)
    shutil.copy(source, tmp_path / key)
    return store, key, tmp_path / key


def test_a_header_costs_one_ranged_read_and_matches_the_file(tmp_path: Path) -> None:
    store, key, path = _stored(tmp_path, "CT_small.dcm")
    ranged = RangedFile(store, key)
    header = pydicom.dcmread(ranged, stop_before_pixels=True)
    assert ranged.requests == 1
    assert header == pydicom.dcmread(path, stop_before_pixels=True)
    ranged.seek(0)
    assert ranged.read() == path.read_bytes()
    ranged.seek(-10, io.SEEK_END)
    assert ranged.read(100) == path.read_bytes()[-10:]
    assert RangedFile(store, key).read(10**9) == path.read_bytes()  # one range past the end: what there is


@pytest.mark.parametrize(("name", "accept"), [
    ("CT_small.dcm", "application/octet-stream"),
    ("JPEG2000.dcm", 'image/jp2; transfer-syntax=*'),
    ("JPEG2000.dcm", "application/octet-stream"),
    ("examples_ybr_color.dcm", "image/jpeg; transfer-syntax=*"),
    ("rtdose.dcm", "application/octet-stream"),
    ("rtdose_expb.dcm", "application/octet-stream"),
    ("rtdose_rle.dcm", "image/x-dicom-rle; transfer-syntax=*"),
    ("rtdose_rle.dcm", "application/octet-stream"),
])
def test_frames_by_ranges_equal_the_frames_of_a_whole_read(tmp_path: Path, name: str, accept: str) -> None:
    store, key, path = _stored(tmp_path, name)
    ranges = parse_accept(accept)
    frames = int(pydicom.dcmread(path).get("NumberOfFrames", 1) or 1)
    numbers = sorted({1, frames, (frames + 1) // 2})
    ranged = RangedFile(store, key)
    from_ranges = read_frames(ranged, numbers, ranges)
    with open(path, "rb") as handle:
        assert from_ranges == read_frames(handle, numbers, ranges)
    whole = pydicom.dcmread(path)
    if accept.startswith("image/"):
        from pydicom.encaps import generate_frames

        expected = list(generate_frames(whole.PixelData, number_of_frames=frames))
        assert [f for f, _ in from_ranges] == [expected[n - 1] for n in numbers]
    elif not whole.file_meta.TransferSyntaxUID.is_compressed and whole.file_meta.TransferSyntaxUID.is_little_endian:
        size = len(whole.PixelData) // frames
        assert [f for f, _ in from_ranges] == [whole.PixelData[(n - 1) * size:n * size] for n in numbers]
    assert Blob(key, None).path is None


def test_a_whole_answer_is_keyed_by_its_members_and_replaces_the_older_one(tmp_path: Path) -> None:
    from dicomflow.web.cache import MetadataCache

    cache = MetadataCache(tmp_path)
    one = cache.answer_path("t", "1.2", "1.2.3", [("1.2.3.4", "a")])
    two = cache.answer_path("t", "1.2", "1.2.3", [("1.2.3.4", "a"), ("1.2.3.5", "b")])
    assert one is not None and two is not None and one != two and one.parent == two.parent
    assert cache.answer_path("t", "1.2", "1.2.3", [("1.2.3.4", "b")]) != one  # stored again: another answer
    assert cache.answer_path("../x", "1.2", None, []) is None
    cache.put_answer(one, b"{}")
    cache.put_answer(two, b"{},{}")
    assert cache.get(one) is None and cache.get(two) == b"{},{}"
    study = cache.answer_path("t", "1.2", None, [("1.2.3.4", "a")])
    assert study is not None and study.parent == tmp_path / ".dicomweb" / "metadata" / "t" / "1.2"
