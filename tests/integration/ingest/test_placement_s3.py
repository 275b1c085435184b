"""The S3 placement (conditional PUT + marker object) against the shared stack's S3Proxy: every duplicates outcome.

Each test gets its own key prefix in the bucket and its own spool folder.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomflow.blobs.s3 import S3Store
from dicomflow.ingest.duplicates import DUPLICATE_SOP_INSTANCE, DuplicateInstanceError, Policy, data_set_start
from dicomflow.ingest.exceptions import OUT_OF_RESOURCES, StorageWriteError
from dicomflow.ingest.placement_s3 import SPOOL_FOLDER, S3Writer, marker_key
from dicomflow.settings import Settings, StorageS3Settings
from dicomflow.stack import free_port

KEY = "default/20240305/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
MARKER = "default/20240305/1.2.3/1.2.3.4/.1.2.3.4.5.dcm.unacknowledged"
CHUNK = 5 * 1024 * 1024


def part10(source_ae: str = "FIRST", **attrs: object) -> bytes:
    """A small CT instance as a Part 10 file; ``source_ae`` only changes its File Meta Information."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.PatientID = "PAT-1"
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.SourceApplicationEntityTitle = source_ae
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def data_set(data: bytes) -> bytes:
    start, _syntax = data_set_start(io.BytesIO(data))
    return data[start:]


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return check()


@pytest.fixture
def s3(base_settings: Settings) -> S3Store:
    s3 = dataclasses.replace(base_settings.storage.s3, prefix=f"test-placement-{uuid.uuid4().hex[:10]}/",
                             multipart_chunk_bytes=CHUNK)
    return S3Store(s3)


@pytest.fixture
def writers(s3: S3Store, tmp_path: Path) -> Iterator[Callable[[Policy], S3Writer]]:
    made: list[S3Writer] = []

    def make(policy: Policy) -> S3Writer:
        writer = S3Writer(s3, tmp_path / "spool", policy)
        made.append(writer)
        return writer

    yield make
    for writer in made:
        writer.close()
    for info in list(s3.list()):
        s3.delete(info.key)


def test_a_new_instance_is_one_object_and_its_marker_goes_with_the_acknowledgement(
        s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("reject")
    data = part10()
    placement = writer.place(writer.upload(KEY, data))
    assert (placement.outcome, placement.publish, placement.size) == ("new", True, len(data))
    assert placement.location == f"s3://{s3.bucket}/{s3.prefix}{KEY}"
    assert s3.read(KEY) == data
    assert marker_key(KEY) == MARKER
    assert s3.exists(MARKER)  # until Kafka acknowledged the store event
    placement.acknowledged()
    assert eventually(lambda: not s3.exists(MARKER))
    assert [i.key for i in s3.list()] == [KEY]


def test_an_identical_copy_with_other_file_meta_changes_nothing(
        s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("reject")
    writer.place(writer.upload(KEY, part10("FIRST"))).acknowledged()
    assert eventually(lambda: not s3.exists(MARKER))
    again = writer.place(writer.upload(KEY, part10("SECOND")))
    assert (again.outcome, again.publish, again.duplicate) == ("identical", False, False)
    assert s3.read(KEY) == part10("FIRST")
    assert not s3.exists(MARKER)  # the marker the retry created was removed


def test_an_identical_retry_after_an_unacknowledged_event_is_published_again(
        s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("reject")
    first = writer.place(writer.upload(KEY, part10()))
    first.not_acknowledged()
    assert s3.exists(MARKER)
    retry = writer.place(writer.upload(KEY, part10("RETRY")))
    assert (retry.outcome, retry.publish) == ("new", True)
    retry.acknowledged()
    assert eventually(lambda: not s3.exists(MARKER))
    # Killed between the PUT and the acknowledgement (the marker left, as not_acknowledged leaves it): same.
    s3.put(MARKER, b"")
    assert writer.place(writer.upload(KEY, part10())).outcome == "new"


def test_reject_keeps_the_stored_copy_and_raises_0x0111(s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("reject")
    writer.place(writer.upload(KEY, part10(PatientID="FIRST"))).acknowledged()
    with pytest.raises(DuplicateInstanceError) as refused:
        writer.place(writer.upload(KEY, part10(PatientID="OTHER")))
    assert refused.value.status == DUPLICATE_SOP_INSTANCE == 0x0111
    assert data_set(s3.read(KEY)) == data_set(part10(PatientID="FIRST"))
    assert eventually(lambda: not s3.exists(MARKER))


def test_keep_answers_success_and_publishes_nothing(s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("keep")
    writer.place(writer.upload(KEY, part10(PatientID="FIRST"))).acknowledged()
    kept = writer.place(writer.upload(KEY, part10(PatientID="OTHER")))
    assert (kept.outcome, kept.publish, kept.duplicate) == ("kept", False, True)
    assert kept.previous_size == len(part10(PatientID="FIRST"))
    assert data_set(s3.read(KEY)) == data_set(part10(PatientID="FIRST"))


def test_replace_keeps_a_backup_until_acknowledged_and_restores_it_otherwise(
        s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("replace")
    old, new = part10(PatientID="FIRST"), part10(PatientID="SECOND-VERSION")
    writer.place(writer.upload(KEY, old)).acknowledged()
    assert eventually(lambda: not s3.exists(MARKER))

    failed = writer.place(writer.upload(KEY, new))
    assert (failed.outcome, failed.publish, failed.previous_size) == ("replaced", True, len(old))
    assert s3.read(KEY) == new
    backups = [i.key for i in s3.list() if i.key.endswith(".replaced")]
    assert len(backups) == 1 and s3.read(backups[0]) == old
    failed.not_acknowledged()  # Kafka did not take the new event: the old copy comes back
    assert s3.read(KEY) == old
    assert [i.key for i in s3.list()] == [KEY]

    done = writer.place(writer.upload(KEY, new))
    done.acknowledged()
    assert eventually(lambda: [i.key for i in s3.list()] == [KEY])
    assert s3.read(KEY) == new


def test_a_spooled_data_set_goes_up_in_parts_and_leaves_the_spool_empty(
        s3: S3Store, writers: Callable[[Policy], S3Writer], tmp_path: Path) -> None:
    writer = writers("reject")
    pixels = os.urandom(2 * CHUNK + 1234)
    data = part10(BitsAllocated=8, PixelData=pixels)
    spooled = writer.spool_file(KEY)
    for start in range(0, len(data), 1 << 20):
        spooled.write(data[start:start + (1 << 20)])
    spooled.seal()
    assert spooled.temp.parent == tmp_path / "spool" / SPOOL_FOLDER
    try:
        placement = writer.place(spooled)
    finally:
        spooled.discard()
    assert placement.outcome == "new"
    info = s3.head(KEY)
    assert info.size == len(data)
    assert info.etag is not None and info.etag.rstrip('"').endswith("-3")  # three parts
    assert s3.read(KEY) == data
    assert list((tmp_path / "spool" / SPOOL_FOLDER).iterdir()) == []
    placement.acknowledged()
    assert eventually(lambda: not s3.exists(MARKER))
    # The same data set again, spooled: compared by streaming the stored object, identical.
    again = writer.spool_file(KEY)
    again.write(data)
    again.seal()
    try:
        assert writer.place(again).outcome == "identical"
    finally:
        again.discard()
    assert list((tmp_path / "spool" / SPOOL_FOLDER).iterdir()) == []


def test_a_dropped_data_set_releases_its_marker(s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    writer = writers("reject")
    spooled = writer.spool_file(KEY)
    spooled.write(b"partial")
    spooled.discard()  # the association ended mid-data set
    assert eventually(lambda: not s3.exists(MARKER))
    assert not s3.exists(KEY)


def test_s3_down_is_a_transient_storage_error(s3: S3Store, tmp_path: Path) -> None:
    dead = dataclasses.replace(s3.settings, endpoint=f"http://127.0.0.1:{free_port()}")
    writer = S3Writer(S3Store(StorageS3Settings(**{**dataclasses.asdict(dead)})), tmp_path / "spool", "reject")
    try:
        with pytest.raises(StorageWriteError) as failed:
            writer.place(writer.upload(KEY, part10()))
    finally:
        writer.close()
    assert failed.value.status == OUT_OF_RESOURCES
    assert "object storage" in failed.value.reason
    assert not failed.value.poison


def test_the_meta_group_alone_never_makes_copies_differ() -> None:
    """The comparison rule, by itself: File Meta differs, data set equal (the basis of ``identical``)."""
    assert part10("A") != part10("B")
    assert data_set(part10("A")) == data_set(part10("B"))
    parsed = pydicom.dcmread(io.BytesIO(part10("A")))
    assert parsed.file_meta.SourceApplicationEntityTitle == "A"


def test_an_identical_resend_right_after_the_acknowledgement_is_identical(
        s3: S3Store, writers: Callable[[Policy], S3Writer]) -> None:
    """The marker's delete is batched; the same instance at once still finds it acknowledged, not unacknowledged."""
    writer = writers("reject")
    for _ in range(5):
        placement = writer.place(writer.upload(KEY, part10()))
        placement.acknowledged()
        again = writer.place(writer.upload(KEY, part10("RESENT")))  # no wait
        assert again.outcome == "identical"
        assert eventually(lambda: not s3.exists(MARKER))
        s3.delete(KEY)
