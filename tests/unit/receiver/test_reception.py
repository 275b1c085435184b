"""A data set streamed in fragments: the header read from its prefix, the validity rule on the whole file.

The prefix reader (:func:`dicomflow.dicom.reader.read_dataset_prefix`) only
decides where the file goes; the complete file must get the same verdict
the consumer would give it (a truncated Pixel Data element is refused,
whatever the size of the fragments it came in).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.dicom import reader, walker
from dicomflow.dicom.constants import EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from dicomflow.dicom.exceptions import TruncatedError, Unsupported
from dicomflow.dicom.part10 import read_file_meta
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.service import StoreService
from dicomflow.receiver.reception import Reception
from tests.conftest import PYDICOM_DATA, sample_files
from tests.unit.ingest.test_service import ASSOC, RecordingPublisher, encoded, service

CT_SAMPLE = PYDICOM_DATA / "test_files" / "CT_small.dcm"
SOURCE = Source("MODALITY", "10.0.0.7")


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)


def _data_set(path: Path) -> tuple[bytes, str]:
    data = path.read_bytes()
    meta, offset = read_file_meta(data, 132)
    return data[offset:], meta.transfer_syntax_uid


def _walkable() -> Iterator[Path]:
    """Part 10 samples whose data set the walker reads whole (the prefix reader's scope)."""
    for path in sample_files("test_files"):
        data = path.read_bytes()
        if data[128:132] != b"DICM":
            continue
        try:
            meta, offset = read_file_meta(data, 132)
            walker.read_dataset(data[offset:], meta.transfer_syntax_uid)
        except (ValueError, TruncatedError, Unsupported, struct.error):
            continue
        yield path


WALKABLE = list(_walkable())


def test_the_samples_give_the_prefix_reader_work() -> None:
    assert len(WALKABLE) > 50


@pytest.mark.parametrize("path", WALKABLE, ids=lambda p: p.name)
def test_a_prefix_gives_the_whole_header_or_asks_for_more(path: Path) -> None:
    dataset, syntax = _data_set(path)
    whole = walker.read_dataset(dataset, syntax).elements
    size = len(dataset)
    cuts = sorted(c for c in {0, 11, 12, 64, 200, 1000, 3000, 10000, size // 2, size - 1, size} if c <= size)
    for cut in cuts:
        header = reader.read_dataset_prefix(dataset[:cut], syntax)
        # never a partial header: None (more bytes needed), or every wanted element of the whole, the same bytes
        assert header is None or header.elements == whole, f"the first {cut} of {size} bytes"
    # an image's Pixel Data runs on past any prefix: its header is known before the data set ends
    pixel_data = struct.pack(">HH" if syntax == EXPLICIT_VR_BE else "<HH", 0x7FE0, 0x0010)
    assert pixel_data not in dataset or reader.read_dataset_prefix(dataset[:-1], syntax) is not None


def test_the_prefix_is_complete_at_the_pixel_data_header_whose_value_runs_on() -> None:
    dataset, syntax = _data_set(CT_SAMPLE)
    pixel_start = dataset.rfind(struct.pack("<HH", 0x7FE0, 0x0010))
    assert pixel_start > 0
    assert reader.read_dataset_prefix(dataset[:pixel_start], syntax) is None  # may still hold wanted elements
    header = reader.read_dataset_prefix(dataset[:pixel_start + 12 + 10], syntax)
    assert header is not None
    assert header.elements == walker.read_dataset(dataset, syntax).elements


def test_a_deflated_or_unusual_encoding_is_left_to_the_whole_data_set() -> None:
    dataset, _ = _data_set(CT_SAMPLE)
    assert reader.read_dataset_prefix(dataset, "1.2.840.10008.1.2.1.99") is None  # deflated
    assert reader.read_dataset_prefix(dataset, IMPLICIT_VR_LE) is None  # encoding differs from the syntax


def _feed(svc: StoreService, dataset: bytes, fragment: int, syntax: str = EXPLICIT_VR_LE) -> tuple[int, str | None]:
    reception = Reception(svc, ASSOC, transfer_syntax_uid=syntax, sop_class_uid=None, sop_instance_uid=None,
                          source=SOURCE, max_bytes=1 << 30)
    chunks = [dataset[i:i + fragment] for i in range(0, len(dataset), fragment)]
    for i, chunk in enumerate(chunks):
        reception.feed(chunk, last=i == len(chunks) - 1)
        assert reception.buffered <= max(2 * fragment, 64 * 1024)
    outcome = reception.finish()
    return outcome.status, outcome.comment


def _with_pixels(declared: int, present: int) -> bytes:
    """A small data set whose Pixel Data (OW) says ``declared`` bytes and carries ``present``."""
    return encoded() + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, declared) + b"\x01" * present


def test_a_streamed_data_set_is_stored_whole(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    svc, _ = service(tmp_path, publisher)
    dataset = _with_pixels(200_000, 200_000)
    assert _feed(svc, dataset, 4096) == (0, None)
    [event] = publisher.events
    stored = Path(event.file_path).read_bytes()
    assert stored.endswith(dataset) and event.file_size == len(stored)
    svc.close()


@pytest.mark.parametrize("fragment", [4096, 65536, 1 << 20])
def test_a_streamed_data_set_the_consumer_could_not_index_is_refused_and_leaves_nothing(
    tmp_path: Path, fragment: int
) -> None:
    publisher = RecordingPublisher()
    svc, _ = service(tmp_path, publisher)
    status, comment = _feed(svc, _with_pixels(300_000, 299_000), fragment)  # 1,000 bytes short
    assert status == 0xC000
    assert comment is not None and comment.startswith("truncated file: Pixel Data needs 300000 bytes")
    assert publisher.events == []
    assert [p for p in (tmp_path / "root").rglob("*") if p.is_file()] == []
    svc.close()


def test_the_verdict_on_a_streamed_file_is_the_consumers(tmp_path: Path) -> None:
    """The same bytes, streamed or whole, get the same answer: the reader the consumer uses decides."""
    publisher = RecordingPublisher()
    svc, _ = service(tmp_path, publisher)
    bad = _with_pixels(300_000, 299_000)
    whole = svc.store_bytes(ASSOC, bad, EXPLICIT_VR_LE, None, None, SOURCE)
    streamed = _feed(svc, bad, 8192)
    # the same status and reason (the byte offsets count from the data set, or from the file's start)
    assert whole.status == streamed[0] == 0xC000
    assert whole.comment is not None and streamed[1] is not None
    assert whole.comment.split(" at byte")[0] == streamed[1].split(" at byte")[0]
    svc.close()
