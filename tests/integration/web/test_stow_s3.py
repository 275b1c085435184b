"""STOW-RS on ``storage.backend = "s3"`` (the shared S3Proxy): objects in the bucket, events naming them, failures when S3 is down."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.blobs.s3 import S3Store
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from dicomflow.store import PgStore
from tests.integration.ingest_support import read_store_events
from tests.integration.web.test_stow import DATA, FAILED, REASON, REFERENCED, TENANT, Stow, _uids
from tests.integration.web_support import make_keys, oauth2_settings, running_web

pytestmark = pytest.mark.integration


def stow_on_s3(settings: Settings, tmp_path: Path, endpoint: str | None = None) -> Iterator[Stow]:
    s3 = dataclasses.replace(settings.storage.s3, prefix=f"test-stow-{uuid.uuid4().hex[:10]}/")
    if endpoint is not None:
        s3 = dataclasses.replace(s3, endpoint=endpoint)
    settings = dataclasses.replace(
        settings, worker_node_id="stow-s3-test",
        storage=dataclasses.replace(settings.storage, backend="s3", s3=s3, spool=tmp_path / "spool"),
    )
    create_topics(settings.kafka, settings.topics)
    with PgStore(settings.database) as store:
        store.migrate()
    keys = make_keys(tmp_path)
    web = oauth2_settings(settings, keys, free_port())
    try:
        with running_web(web) as url:
            yield Stow(web, url, keys)
    finally:
        delete_topics(settings.kafka, settings.topics.all())
        if endpoint is None:
            bucket = S3Store(s3)
            for info in list(bucket.list()):
                bucket.delete(info.key)


@pytest.fixture
def stow(settings: Settings, tmp_path: Path) -> Iterator[Stow]:
    yield from stow_on_s3(settings, tmp_path)


@pytest.fixture
def stow_down(settings: Settings, tmp_path: Path) -> Iterator[Stow]:
    yield from stow_on_s3(settings, tmp_path, endpoint=f"http://127.0.0.1:{free_port()}")


def test_stow_rs_stores_into_the_bucket(stow: Stow, tmp_path: Path) -> None:
    ct, mr = (DATA / "CT_small.dcm").read_bytes(), (DATA / "MR_small.dcm").read_bytes()
    answer = stow.post([("application/dicom", ct), ("application/dicom", mr)])
    assert answer.status_code == 200, answer.text
    assert len(_uids(answer.json(), REFERENCED)) == 2
    store = S3Store(stow.settings.storage.s3)
    events = [e for _, e in read_store_events(stow.settings, stow.settings.topics.main)]
    assert len(events) == 2
    for event in events:
        assert event.file_path.startswith(f"s3://{store.bucket}/{store.prefix}{TENANT}/"), event.file_path
        stored = store.read(store.key_of(event.file_path))
        assert stored[-1000:] in (ct[-1000:], mr[-1000:])  # the data set as sent, behind our own meta group
        assert event.file_size == len(stored)
    spool = stow.settings.storage.spool
    assert not [p for p in spool.rglob("*") if p.is_file()]  # the body spool and the receive spool are empty
    assert not (stow.settings.storage.root / ".dicomweb" / "stow").exists()


def test_stow_rs_with_s3_down_fails_the_part_and_publishes_nothing(stow_down: Stow) -> None:
    answer = stow_down.post([("application/dicom", (DATA / "CT_small.dcm").read_bytes())])
    assert answer.status_code == 409, answer.text
    [failed] = answer.json()[FAILED]["Value"]
    assert failed[REASON]["Value"] == [0xA700]
    assert read_store_events(stow_down.settings, stow_down.settings.topics.main) == []
