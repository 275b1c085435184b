"""The image workers on the ``s3`` backend: originals read from the shared stack's S3Proxy, outputs written back.

The corpus of :mod:`.test_worker` is indexed on the filesystem, moved to S3
by ``storage migrate`` and removed locally; the workers then run with
``backend = "s3"``: the thumbnails and served copies are objects in the
bucket, their rows name ``s3://…``, and an original deleted from the bucket
is a ``file-missing`` dead letter.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pydicom
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from dicomflow.blobs.s3 import S3Store
from dicomflow.images.worker import ImageWorker
from dicomflow.kafka.reader import read_all
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.models import DicomImageMeta, decode
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from dicomflow.storage_migrate import MigrateOptions, Migration
from tests.integration.images.test_worker import EXPLICIT_LE, _build, images_settings  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_settings(images_settings: Settings) -> Iterator[Settings]:  # noqa: F811
    if not images_settings.storage.s3.endpoint:
        pytest.skip("the shared stack runs without S3Proxy (dicomflow stack up --s3)")
    s3 = dataclasses.replace(images_settings.storage.s3, prefix=f"imgs3-{uuid.uuid4().hex[:10]}/")
    settings = dataclasses.replace(images_settings, storage=dataclasses.replace(images_settings.storage, s3=s3))
    try:
        yield settings
    finally:
        store = S3Store(s3)
        for info in list(store.list()):
            store.delete(info.key)


def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database.conninfo()) as conn:
        return conn.execute(sql).fetchall()


def _dataset(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def test_workers_read_from_s3_and_write_their_outputs_back(s3_settings: Settings, tmp_path: Any) -> None:
    c = _build(s3_settings, tmp_path / "in", series_count=2, per_series=3)
    summary = Migration(s3_settings.storage, s3_settings.database, MigrateOptions(to="s3")).run()
    assert not summary.failed, summary.failed
    shutil.rmtree(s3_settings.storage.root)
    s3_settings.storage.root.mkdir()
    store = S3Store(s3_settings.storage.s3)
    prefix = f"s3://{store.bucket}/{store.prefix}"
    files = {r[0]: r[1] for r in _rows(s3_settings, "SELECT sop_uid, file_path FROM dicom_object_meta")}
    assert all(p.startswith(prefix) for p in files.values())
    first_series = next(iter(c.series.values()))
    gone = first_series[0]  # not the series' middle instance: its thumbnail is still made
    store.delete(store.key_of(files[gone]))

    on_s3 = dataclasses.replace(s3_settings, storage=dataclasses.replace(s3_settings.storage, backend="s3"))
    result = ImageWorker(on_s3, ImagesMetrics(CollectorRegistry()), until_idle_s=3.0).run()
    assert result.transcoded == len(c.need_transfer) - 1 and result.thumbnails == len(c.series) - 1

    image = {r[0]: r[1:] for r in _rows(s3_settings, "SELECT sop_uid, pixel_data_location, thumbnail_location"
                                                     " FROM dicom_image_meta")}
    for sop in c.need_transfer:
        if sop == gone:
            continue
        copy = image[sop][0]
        assert copy.startswith(prefix) and f"/.served/{sop}.{EXPLICIT_LE}.dcm" in copy, copy
        served = _dataset(store.read(store.key_of(copy)))
        original = _dataset(store.read(store.key_of(files[sop])))
        assert str(served.file_meta.TransferSyntaxUID) == EXPLICIT_LE
        np.testing.assert_array_equal(served.pixel_array, original.pixel_array)
    thumbs = [t for _, t in image.values() if t]
    assert len(thumbs) == len(c.series) - 1
    for thumb in thumbs:
        assert thumb.startswith(prefix) and thumb.endswith("/.served/thumbnail.jpg")
        with Image.open(io.BytesIO(store.read(store.key_of(thumb)))) as img:
            assert img.format == "JPEG" and max(img.size) == s3_settings.images.thumbnail_size
    assert not list(s3_settings.storage.root.rglob("*")), "nothing is written to the local root on s3"

    dlq = read_all(s3_settings.kafka, f"{s3_settings.topics.dicom_image}.dlq")
    letters = {decode(r.value or b"", DicomImageMeta).sop_uid: dict((k, v.decode()) for k, v in r.headers)
               for r in dlq}
    assert set(letters) == {gone, c.undecodable}
    assert letters[gone]["dicomflow.error.class"] == "file-missing"
    assert letters[c.undecodable]["dicomflow.error.class"] == "undecodable-pixels"


def test_an_unreachable_s3_pauses_the_workers_without_dead_letters(s3_settings: Settings, tmp_path: Any) -> None:
    c = _build(s3_settings, tmp_path / "in", series_count=1, per_series=2)
    assert not Migration(s3_settings.storage, s3_settings.database, MigrateOptions(to="s3")).run().failed
    closed = dataclasses.replace(s3_settings.storage.s3, endpoint=f"http://127.0.0.1:{free_port()}")
    down = dataclasses.replace(s3_settings, storage=dataclasses.replace(s3_settings.storage, backend="s3", s3=closed))
    metrics = ImagesMetrics(CollectorRegistry())
    worker = ImageWorker(down, metrics)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while metrics.retries._value.get() < 2:
        assert time.monotonic() < deadline and thread.is_alive(), "the workers did not retry"
        time.sleep(0.2)
    worker.stop()
    thread.join(60)
    assert worker.summary.consumed == 0 and worker.summary.dead_lettered == 0
    assert read_all(s3_settings.kafka, f"{s3_settings.topics.dicom_image}.dlq") == []
    up = dataclasses.replace(s3_settings, storage=dataclasses.replace(s3_settings.storage, backend="s3"))
    again = ImageWorker(up, ImagesMetrics(CollectorRegistry()), until_idle_s=3.0).run()  # same group: resumes
    assert again.transcoded == len(c.need_transfer) and again.thumbnails == len(c.series) - 1
