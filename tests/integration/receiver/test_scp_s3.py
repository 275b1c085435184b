"""The C-STORE receiver (both engines), ``publish`` and STOW-RS on ``storage.backend = "s3"``, the shared S3Proxy.

Each test gets its own key prefix in the bucket, its own spool, topics and
storage root; the object must equal what was sent (File Meta Information
aside), the store event must name it by ``s3://``, and an S3 outage must be
a failure status with nothing published.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomflow.blobs.s3 import S3Store
from dicomflow.ingest.duplicates import data_set_start
from dicomflow.ingest.exceptions import OUT_OF_RESOURCES
from dicomflow.ingest.placement_s3 import SPOOL_FOLDER
from dicomflow.kafka.producer import Publisher
from dicomflow.scanner.publish import FolderPublisher
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from tests.integration.ingest_support import make_topics, read_store_events, running_receiver, storescu, with_receiver
from tests.integration.receiver.test_scp import instance, send

CHUNK = 5 * 1024 * 1024


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def on_s3(settings: Settings, tmp_path: Path, **s3_changes: object) -> Settings:
    """``settings`` storing into a fresh prefix of the shared bucket, spool under ``tmp_path``."""
    s3 = dataclasses.replace(settings.storage.s3, prefix=f"test-scp-{uuid.uuid4().hex[:10]}/",
                             multipart_chunk_bytes=CHUNK, **s3_changes)  # type: ignore[arg-type]
    storage = dataclasses.replace(settings.storage, backend="s3", s3=s3, spool=tmp_path / "spool")
    return dataclasses.replace(settings, storage=storage)


@pytest.fixture
def s3_settings(settings: Settings, engine: str, tmp_path: Path) -> Iterator[Settings]:
    s = with_receiver(on_s3(settings, tmp_path), engine=engine)
    make_topics(s)
    yield s
    store = S3Store(s.storage.s3)
    for info in list(store.list()):
        store.delete(info.key)


def encoded(ds: Dataset) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def data_set(data: bytes) -> tuple[str | None, bytes]:
    start, syntax = data_set_start(io.BytesIO(data))
    return syntax, data[start:]


def spool_is_empty(settings: Settings) -> bool:
    folder = settings.storage.spool / SPOOL_FOLDER
    return not folder.exists() or not list(folder.iterdir())


def only_objects(store: S3Store, timeout_s: float = 10.0) -> list[str]:
    """The keys in the prefix once the markers of acknowledged instances are gone (deleted in the background)."""
    deadline = time.monotonic() + timeout_s
    keys = [i.key for i in store.list()]
    while any(".unacknowledged" in k for k in keys) and time.monotonic() < deadline:
        time.sleep(0.05)
        keys = [i.key for i in store.list()]
    return keys


def check_stored(s: Settings, sent: dict[str, bytes]) -> None:
    """One event per instance naming ``s3://bucket/key``, each object equal to what was sent (meta aside)."""
    store = S3Store(s.storage.s3)
    events = [e for _, e in read_store_events(s, s.topics.main)]
    assert sorted(e.sop_uid for e in events) == sorted(sent)
    for event in events:
        assert event.file_path.startswith(f"s3://{store.bucket}/{store.prefix}"), event.file_path
        key = store.key_of(event.file_path)
        stored = store.read(key)
        assert data_set(stored) == data_set(sent[event.sop_uid])
        assert event.file_size == len(stored)
    assert sorted(only_objects(store)) == sorted(store.key_of(e.file_path) for e in events)
    assert spool_is_empty(s)
    assert not list(s.storage.root.rglob("*.dcm"))  # nothing instance-related under the local root


def test_storescu_into_s3(s3_settings: Settings, tmp_path: Path) -> None:
    datasets = [instance(), instance(series="1.2.826.0.1.3680043.8.498.77.2")]
    files = []
    for i, ds in enumerate(datasets):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(encoded(ds))
        files.append(path)
    with running_receiver(s3_settings):
        run = storescu(s3_settings.receiver.port, files)
    assert run.returncode == 0, run.stderr
    check_stored(s3_settings, {str(ds.SOPInstanceUID): f.read_bytes() for ds, f in zip(datasets, files, strict=True)})


def test_pynetdicom_into_s3_and_an_identical_resend_publishes_nothing(s3_settings: Settings) -> None:
    ds = instance()
    with running_receiver(s3_settings):
        first = send(s3_settings.receiver.port, [ds])
        again = send(s3_settings.receiver.port, [ds], calling="OTHER_AE")
    assert [x.Status for x in first + again] == [0, 0]
    check_stored(s3_settings, {str(ds.SOPInstanceUID): encoded(ds)})


def test_a_large_data_set_streams_through_the_spool_in_parts(s3_settings: Settings, tmp_path: Path) -> None:
    ds = instance(Rows=2048, Columns=2560, BitsAllocated=16, BitsStored=16, HighBit=15, PixelRepresentation=0,
                  SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", NumberOfFrames=4)
    ds.PixelData = os.urandom(2048 * 2560 * 2 * 4)  # 40 MiB
    path = tmp_path / "large.dcm"
    path.write_bytes(encoded(ds))
    with running_receiver(s3_settings):
        run = storescu(s3_settings.receiver.port, [path])
    assert run.returncode == 0, run.stderr
    check_stored(s3_settings, {str(ds.SOPInstanceUID): path.read_bytes()})
    store = S3Store(s3_settings.storage.s3)
    [info] = [i for i in store.list() if i.key.endswith(".dcm")]
    assert info.etag is not None and "-" in info.etag.strip('"'), info.etag  # a multipart upload


def test_s3_down_answers_a_failure_and_publishes_nothing(settings: Settings, engine: str, tmp_path: Path) -> None:
    down = with_receiver(on_s3(settings, tmp_path, endpoint=f"http://127.0.0.1:{free_port()}"), engine=engine)
    make_topics(down)
    big = instance()
    big.PixelData = os.urandom(3 * 1024 * 1024)  # several P-DATA fragments: the spool's way
    big.BitsAllocated = 8
    with running_receiver(down):
        statuses = send(down.receiver.port, [instance(), big])
    assert [x.Status for x in statuses] == [OUT_OF_RESOURCES, OUT_OF_RESOURCES]
    assert "object storage" in statuses[0].ErrorComment
    assert read_store_events(down, down.topics.main) == []
    assert spool_is_empty(down)


def test_publish_uploads_files_into_s3(settings: Settings, tmp_path: Path) -> None:
    s = on_s3(settings, tmp_path)
    make_topics(s)
    folder = tmp_path / "incoming"
    folder.mkdir()
    sent: dict[str, bytes] = {}
    for i in range(3):
        ds = instance()
        (folder / f"{i}.dcm").write_bytes(encoded(ds))
        sent[str(ds.SOPInstanceUID)] = encoded(ds)
    publisher = Publisher(s.kafka, s.topics, client_id="test-publish-s3")
    runner = FolderPublisher(s, publisher)
    try:
        summary = runner.run(sorted(folder.iterdir()))
        again = runner.run(sorted(folder.iterdir()))
        assert len(summary.published) == 3 and summary.ok, summary
        assert len(again.skipped) == 3 and not again.published  # identical: stored already
        check_stored(s, sent)
    finally:
        runner.close()
        publisher.close()
        store = S3Store(s.storage.s3)
        for info in list(store.list()):
            store.delete(info.key)
