"""``dicomflow images`` against the real stack: files published, indexed by the consumer, then processed."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pydicom
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from dicomflow.images.outputs import ORIGIN, ORIGIN_HEADER, Outputs
from dicomflow.images.worker import ImageWorker
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.models import DicomImageMeta, decode
from dicomflow.pipeline.service import ConsumerService
from dicomflow.scanner.publish import FolderPublisher
from dicomflow.settings import Settings, to_child_env
from dicomflow.store import DeleteTarget, PgStore

pytestmark = pytest.mark.integration

DATA = Path(pydicom.__file__).parent / "data" / "test_files"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


@dataclass
class Corpus:
    settings: Settings
    need_transfer: list[str]  # SOP UIDs that must get a served copy
    undecodable: str
    series: dict[str, list[str]]  # series UID -> SOP UIDs in InstanceNumber order
    originals: dict[str, str]  # file path -> sha256 before processing


def _save(ds: pydicom.Dataset, folder: Path, study: str, series: str, number: int) -> str:
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = number
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return str(ds.SOPInstanceUID)


def _read(name: str) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(DATA / name)


def _build(settings: Settings, folder: Path, *, series_count: int, per_series: int) -> Corpus:
    folder.mkdir()
    study = generate_uid()
    series: dict[str, list[str]] = {}
    need: list[str] = []
    for _ in range(series_count):
        uid = generate_uid()
        # InstanceNumbers deliberately out of file order: the middle is by InstanceNumber.
        numbers = list(range(per_series, 0, -1))
        sops = {n: _save(_read("JPEG2000.dcm"), folder, study, uid, n) for n in numbers}
        series[uid] = [sops[n] for n in sorted(sops)]
        need += series[uid]
    native = generate_uid()
    series[native] = [_save(_read("CT_small.dcm"), folder, study, native, 1)]
    broken = _read("MR_small_jp2klossless.dcm")
    broken.PixelData = encapsulate([b"\xff\x4f\xff\x51" + os.urandom(200)])
    bad_series = generate_uid()
    bad = _save(broken, folder, study, bad_series, 1)
    series[bad_series] = [bad]
    with Publisher(settings.kafka, settings.topics) as publisher:
        summary = FolderPublisher(settings, publisher, copy_into_storage=True).run(sorted(folder.glob("*.dcm")))
    assert summary.ok
    ConsumerService(settings, until_idle_s=2.0).run()
    originals = {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in settings.storage.root.rglob("*.dcm") if ".served" not in p.parts}
    return Corpus(settings, need, bad, series, originals)


@pytest.fixture
def images_settings(settings: Settings) -> Iterator[Settings]:
    ingest = dataclasses.replace(settings.ingest, supported_transfer_syntaxes=(EXPLICIT_LE, "1.2.840.10008.1.2"))
    s = dataclasses.replace(
        settings, ingest=ingest, worker_node_id="images-test",
        consumer=dataclasses.replace(settings.consumer, parse_workers=1, batch_max_ms=200),
        images=dataclasses.replace(settings.images, group_id=f"images_{uuid.uuid4().hex[:10]}", batch_max_messages=3),
    )
    assert f"{s.topics.dicom_image}.dlq" in s.topics.all()  # created with the others
    create_topics(s.kafka, s.topics)
    with PgStore(s.database) as store:
        store.migrate()
    try:
        yield s
    finally:
        delete_topics(s.kafka, s.topics.all())


def _rows(settings: Settings, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.database.conninfo()) as conn:
        return conn.execute(sql, params).fetchall()


def _pixels(path: str) -> np.ndarray[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path).pixel_array


def _check_outputs(c: Corpus) -> None:
    """Exactly the expected outputs: one thumbnail per series with pixels, every copy, every receipt."""
    s = c.settings
    image = {r[0]: r[1:] for r in _rows(s, "SELECT sop_uid, pixel_data_location, thumbnail_location, series_uid"
                                           " FROM dicom_image_meta")}
    receipts = {r[0]: r[1:] for r in _rows(s, "SELECT sop_uid, transfer_status, transfer_reason, file_path"
                                              " FROM dicom_object_meta")}
    for sop in c.need_transfer:
        copy, _, _ = image[sop]
        assert receipts[sop][:2] == ("Success", None), sop
        assert copy and Path(copy).is_file() and ".served" in Path(copy).parts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert str(pydicom.dcmread(copy).file_meta.TransferSyntaxUID) == EXPLICIT_LE
        np.testing.assert_array_equal(_pixels(copy), _pixels(receipts[sop][2]))
    status, reason, _ = receipts[c.undecodable]
    assert status == "Failed" and reason and "cannot transcode" in reason
    assert image[c.undecodable][0] == receipts[c.undecodable][2]  # still the consumer's: the original
    for series, sops in c.series.items():
        holders = [sop for sop in sops if image[sop][1]]
        if series == image[c.undecodable][2]:
            assert holders == []
            continue
        assert holders == [sops[len(sops) // 2]], series
        thumb = Path(image[holders[0]][1])
        with Image.open(io.BytesIO(thumb.read_bytes())) as img:
            assert img.format == "JPEG" and max(img.size) == s.images.thumbnail_size
    thumbs = sorted(s.storage.root.rglob("thumbnail.jpg"))
    assert len(thumbs) == len(c.series) - 1  # every series with decodable pixels, once
    copies = sorted(s.storage.root.rglob(f"*.{EXPLICIT_LE}.dcm"))
    assert len(copies) == len(c.need_transfer)
    for path, digest in c.originals.items():  # the originals are never touched
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest


def test_images_fills_locations_transfer_status_and_the_dlq(images_settings: Settings, tmp_path: Path) -> None:
    c = _build(images_settings, tmp_path / "in", series_count=2, per_series=3)
    summary = ImageWorker(images_settings, ImagesMetrics(CollectorRegistry()), until_idle_s=3.0).run()
    assert summary.transcoded == len(c.need_transfer) and summary.thumbnails == len(c.series) - 1
    _check_outputs(c)

    dlq = read_all(images_settings.kafka, f"{images_settings.topics.dicom_image}.dlq")
    headers = [dict((k, v.decode()) for k, v in r.headers) for r in dlq]
    assert [h["dicomflow.error.class"] for h in headers] == ["undecodable-pixels"]
    assert "cannot transcode" in headers[0]["dicomflow.error.reason"]
    assert decode(dlq[0].value or b"", DicomImageMeta).sop_uid == c.undecodable

    # Republished rows carry the marker and the locations; the workers skipped them (no loop).
    topic = read_all(images_settings.kafka, images_settings.topics.dicom_image)
    mine = [decode(r.value or b"", DicomImageMeta) for r in topic if dict(r.headers).get(ORIGIN_HEADER) == ORIGIN]
    assert {m.sop_uid for m in mine if ".served" in (m.pixel_data_location or "")} == set(c.need_transfer)
    assert summary.skipped == len(mine) and summary.consumed == len(topic)

    # A second group replays every event: nothing is rebuilt, nothing changes.
    again = dataclasses.replace(images_settings, images=dataclasses.replace(images_settings.images,
                                                                            group_id=f"again_{uuid.uuid4().hex[:8]}"))
    replay = ImageWorker(again, ImagesMetrics(CollectorRegistry()), until_idle_s=3.0).run()
    assert (replay.transcoded, replay.thumbnails, replay.republished) == (0, 0, 0)
    _check_outputs(c)


def test_kill_9_mid_batch_leaves_exact_outputs(images_settings: Settings, tmp_path: Path) -> None:
    c = _build(images_settings, tmp_path / "in", series_count=4, per_series=6)
    child = dataclasses.replace(
        images_settings,
        images=dataclasses.replace(images_settings.images, batch_max_messages=3),
        ingest=dataclasses.replace(images_settings.ingest, supported_transfer_syntaxes=(EXPLICIT_LE, "1.2.840.10008.1.2")),
    )
    env = to_child_env(child, os.environ)
    command = [sys.executable, "-m", "dicomflow", "images", "--until-idle", "3"]
    log = (tmp_path / "images.log").open("wb")
    first = subprocess.Popen(command, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list(images_settings.storage.root.rglob(f"*.{EXPLICIT_LE}.dcm")):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "images.log").read_text()
            time.sleep(0.01)
        time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(30)
    done_before = len(list(images_settings.storage.root.rglob(f"*.{EXPLICIT_LE}.dcm")))
    assert 0 < done_before < len(c.need_transfer), "the kill must land mid-run"
    second = subprocess.run(command, env=env, stdout=log, stderr=log, timeout=120)
    log.close()
    assert second.returncode == 0, (tmp_path / "images.log").read_text()[-3000:]
    _check_outputs(c)
    dlq = read_all(images_settings.kafka, f"{images_settings.topics.dicom_image}.dlq")
    assert {decode(r.value or b"", DicomImageMeta).sop_uid for r in dlq} == {c.undecodable}


def test_outputs_of_a_series_deleted_while_they_were_made_are_removed(
        images_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delete that commits between the worker's read of the index and its record leaves no copy or thumbnail.

    The purge removes only what the deleted rows named; outputs written after the delete are the worker's to
    remove (the race the lifecycle's purge cannot see).
    """
    c = _build(images_settings, tmp_path / "in", series_count=1, per_series=3)
    doomed = next(s for s, sops in c.series.items() if set(sops) <= set(c.need_transfer))
    study, tenant = _rows(images_settings, "SELECT study_uid, tenant_id FROM dicom_image_meta WHERE series_uid = %s",
                          (doomed,))[0]
    made = Outputs._thumbnail
    deleted: list[bool] = []

    def thumbnail_then_delete(self: Outputs, batch: Any, record: Any, skey: Any, conn: Any) -> None:
        made(self, batch, record, skey, conn)
        if skey[2] == doomed and not deleted:  # written; the delete commits before the worker records it
            with PgStore(images_settings.database) as store:
                deleted.append(store.delete(DeleteTarget(tenant, study, doomed)).found)

    monkeypatch.setattr(Outputs, "_thumbnail", thumbnail_then_delete)
    ImageWorker(images_settings, ImagesMetrics(CollectorRegistry()), until_idle_s=3.0).run()
    assert deleted == [True]
    originals = {Path(p).parent for p in c.originals}
    left = [p for folder in originals for p in folder.rglob("*")
            if p.is_file() and (p.name == "thumbnail.jpg" or ".served" in p.parts) and doomed in str(p)]
    assert left == [], left
    assert _rows(images_settings, "SELECT count(*) FROM dicom_image_meta WHERE series_uid = %s", (doomed,)) == [(0,)]
