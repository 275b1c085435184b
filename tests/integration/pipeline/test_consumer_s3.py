"""The consumer on ``storage.backend = "s3"``: store events naming ``s3://`` objects, headers by ranged reads.

Against a private S3Proxy (real SigV4, real ranged GETs), the shared Kafka
and PostgreSQL: rows indexed from objects, a missing object and a location
outside the bucket dead-lettered with their classes, and an S3 outage paused
and retried with no dead letter.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from dicomflow.blobs import BlobStore, open_store
from dicomflow.corpus import Corpus
from dicomflow.kafka.reader import read_all
from dicomflow.models import DicomStoreMeta
from dicomflow.pipeline.parse_worker import FILE_MISSING, OUTSIDE_ROOT
from dicomflow.settings import Settings
from dicomflow.stack import LocalStack, S3ProxyServer
from tests.integration.consumer_support import (
    BackgroundService,
    corpus,
    counts,
    expected_counts,
    pipeline,  # noqa: F401 - fixture
    publish,
    run_service,
)
from tests.integration.s3_support import client_settings, private_s3proxy

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_server(stack: LocalStack) -> Iterator[S3ProxyServer]:
    with private_s3proxy(stack.settings) as server:
        yield server


@pytest.fixture
def s3_pipeline(pipeline: Settings, s3_server: S3ProxyServer, tmp_path: Path) -> Settings:  # noqa: F811
    s3 = dataclasses.replace(client_settings(s3_server), prefix=f"{tmp_path.name}/")
    return dataclasses.replace(pipeline, storage=dataclasses.replace(pipeline.storage, backend="s3", s3=s3))


def _uploaded(settings: Settings, c: Corpus) -> tuple[BlobStore, list[DicomStoreMeta]]:
    """The corpus's files put into the bucket (same keys), and events naming the objects; local files removed."""
    store = open_store(settings.storage)
    root = Path(settings.storage.root)
    events = []
    for event in c.events:
        path = Path(event.file_path)
        key = path.relative_to(root).as_posix()
        store.put_file(key, path)
        path.unlink()
        events.append(msgspec.structs.replace(event, file_path=store.location(key)))
    return store, events


def test_indexes_s3_objects(s3_pipeline: Settings) -> None:
    c = corpus(s3_pipeline, 24)
    _, events = _uploaded(s3_pipeline, c)
    assert all(e.file_path.startswith("s3://") for e in events)
    publish(s3_pipeline, events)
    summary = run_service(s3_pipeline)
    assert summary.dead_lettered == 0
    assert counts(s3_pipeline.database) == expected_counts(c)
    assert not list(Path(s3_pipeline.storage.root).rglob("*.dcm")), "nothing is read from the local root"


def test_missing_object_and_foreign_location_are_dead_letters(s3_pipeline: Settings) -> None:
    c = corpus(s3_pipeline, 6)
    store, events = _uploaded(s3_pipeline, c)
    store.delete(store.key_of(events[0].file_path))
    bucket = s3_pipeline.storage.s3.bucket
    events[1] = msgspec.structs.replace(events[1], file_path=events[1].file_path.replace(f"s3://{bucket}/", "s3://other/"))
    events[2] = msgspec.structs.replace(events[2], file_path=events[2].file_path.replace(".dcm", "/../../x.dcm"))
    publish(s3_pipeline, events)
    summary = run_service(s3_pipeline)
    assert summary.dead_lettered == 3
    letters = read_all(s3_pipeline.kafka, s3_pipeline.topics.dlq)
    classes = sorted(dict(r.headers).get("dicomflow.error.class", b"").decode() for r in letters)
    assert classes == sorted([FILE_MISSING, OUTSIDE_ROOT, OUTSIDE_ROOT])
    reasons = " ".join(dict(r.headers).get("dicomflow.error.reason", b"").decode() for r in letters)
    assert events[0].file_path in reasons
    assert counts(s3_pipeline.database)["dicom_image_meta"] == 3


def test_s3_outage_pauses_and_resumes_without_dead_letters(s3_pipeline: Settings, s3_server: S3ProxyServer) -> None:
    c = corpus(s3_pipeline, 12)
    _, events = _uploaded(s3_pipeline, c)
    s3_server.kill()
    try:
        publish(s3_pipeline, events)
        service = BackgroundService(s3_pipeline, until_idle_s=8.0).start()
        time.sleep(6.0)  # several retries against the stopped server
        assert service.thread.is_alive(), "the consumer must wait for S3, not stop"
        assert counts(s3_pipeline.database)["dicom_image_meta"] == 0
        assert not read_all(s3_pipeline.kafka, s3_pipeline.topics.dlq, timeout_s=5)
    finally:
        s3_server.start(keep_credentials=True)
    summary = service.join(120)
    assert summary.dead_lettered == 0
    assert counts(s3_pipeline.database) == expected_counts(c)


def test_header_is_one_ranged_read(s3_pipeline: Settings) -> None:
    """Every bundled template's header comes from one ranged GET of HEAD_BYTES, not the whole object."""
    from dicomflow.dicom.reader import HEAD_BYTES, read_blob

    c = corpus(s3_pipeline, 8, studies=2, series_per_study=4)
    store, events = _uploaded(s3_pipeline, c)
    for event in events:
        fetched: list[int] = []
        key = store.key_of(event.file_path)
        read_blob(store, key, fetched=fetched)
        assert len(fetched) == 1 and fetched[0] <= HEAD_BYTES, (key, fetched)
