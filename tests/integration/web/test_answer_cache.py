"""The web's in-memory answers: a series' metadata kept until the series changes, thumbnails kept, gzip on request.

A series goes through the real consumer; the kept answer is proved to be
served from memory by removing everything it was built from (the files and
the on-disk metadata cache) before asking again. Then an instance is added
and another stored again with other content, each through the consumer,
and the next answer must show it; so must an instance deleted while
another is added (both counts as before).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import shutil
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pydicom
import pytest
from PIL import Image
from psycopg import sql
from pydicom.uid import generate_uid

from dicomflow.corpus import SeriesInfo, make_corpus, store_event
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta
from dicomflow.settings import Settings
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from tests.integration.web_support import Keys, make_keys, oauth2_settings, running_web

pytestmark = pytest.mark.integration


@dataclass
class Env:
    settings: Settings
    url: str
    keys: Keys
    series: SeriesInfo
    events: list[DicomStoreMeta]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token()}"}

    @property
    def metadata_url(self) -> str:
        return f"{self.url}/studies/{self.series.study_uid}/series/{self.series.series_uid}/metadata"

    def metadata(self, encoding: str = "identity") -> list[dict[str, Any]]:
        r = httpx.get(self.metadata_url, headers={**self.headers, "Accept-Encoding": encoding}, timeout=30)
        assert r.status_code == 200, r.text
        documents: list[dict[str, Any]] = r.json()
        return documents

    def index(self, events: list[DicomStoreMeta]) -> None:
        from dicomflow.pipeline.service import ConsumerService

        with Publisher(self.settings.kafka, self.settings.topics) as publisher:
            publisher.send_store_events(events).raise_for_failures()
        ConsumerService(self.settings, until_idle_s=2.0).run()


@pytest.fixture
def env(stack: LocalStack, tmp_path: Path) -> Iterator[Env]:
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    topics = dataclasses.replace(
        base.topics, main=f"ac_{suffix}", log=f"ac_log_{suffix}", dicom_state=f"ac_state_{suffix}",
        dicom_image=f"ac_image_{suffix}", audit=f"ac_audit_{suffix}", dlq=f"ac_{suffix}.dlq",
        consumer_group_id=f"ac_{suffix}", partitions=1,
    )
    dbname = f"dicomflow_ac_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                  sql.Identifier(base.database.user)))
    root = tmp_path / "storage"
    consumer = dataclasses.replace(base.consumer, batch_max_messages=50, batch_max_ms=200, parse_workers=1)
    settings = dataclasses.replace(base, topics=topics, consumer=consumer,
                                   database=dataclasses.replace(base.database, dbname=dbname),
                                   storage=dataclasses.replace(base.storage, root=root))
    create_topics(settings.kafka, topics)
    try:
        with PgStore(settings.database) as store:
            store.migrate()
        corpus = make_corpus(root, 3, studies=1, series_per_study=1, templates=["CT_small.dcm"])
        keys = make_keys(tmp_path)
        web = oauth2_settings(settings, keys, free_port())
        env = Env(web, "", keys, corpus.series[0], corpus.events)
        env.index(corpus.events)
        with running_web(web) as url:
            env.url = url
            yield env
    finally:
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _variant(env: Env, source: DicomStoreMeta, sop_uid: str, comment: str) -> DicomStoreMeta:
    """A file of the series beside ``source``'s: SOP Instance UID ``sop_uid``, ImageComments ``comment``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(source.file_path)
    ds.SOPInstanceUID = sop_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.ImageComments = comment
    path = Path(source.file_path).with_name(f"{sop_uid}.{uuid.uuid4().hex[:6]}.dcm")
    ds.save_as(path)
    return store_event(path, ds, source.tenant_id)


def _comments(documents: list[dict[str, Any]]) -> dict[str, str | None]:
    return {d["00080018"]["Value"][0]: (d.get("00204000") or {}).get("Value", [None])[0] for d in documents}


def test_series_metadata_is_kept_until_an_instance_is_added_or_replaced(env: Env) -> None:
    first = env.metadata()
    assert {d["00080018"]["Value"][0] for d in first} == {e.sop_uid for e in env.events}
    # Everything the answer was built from is gone: only the kept answer can serve it now.
    hidden = Path(env.settings.storage.root) / "hidden"
    shutil.move(Path(env.events[0].file_path).parent, hidden)
    shutil.rmtree(Path(env.settings.storage.root) / ".dicomweb")
    assert env.metadata() == first
    shutil.move(hidden, Path(env.events[0].file_path).parent)

    added = _variant(env, env.events[0], str(generate_uid()), "added")
    env.index([added])
    after_add = _comments(env.metadata())
    assert set(after_add) == {e.sop_uid for e in env.events} | {added.sop_uid}
    assert after_add[added.sop_uid] == "added"

    replaced = _variant(env, env.events[1], env.events[1].sop_uid, "replaced")
    env.index([replaced])
    after_replace = _comments(env.metadata())
    assert len(after_replace) == 4
    assert after_replace[env.events[1].sop_uid] == "replaced"

    # An instance deleted (its rows, as a purge would) and another added: both counts as they were.
    gone = env.events[2]
    with psycopg.connect(env.settings.database.conninfo(), autocommit=True) as conn:
        for table in ("dicom_image_meta", "dicom_object_meta"):
            conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND sop_uid = %s").format(sql.Identifier(table)),
                         (gone.tenant_id, gone.sop_uid))
    other = _variant(env, env.events[0], str(generate_uid()), "another")
    env.index([other])
    after_swap = _comments(env.metadata())
    assert set(after_swap) == set(after_replace) - {gone.sop_uid} | {other.sop_uid}


def test_gzip_only_when_accepted_and_the_same_document(env: Env) -> None:
    plain = httpx.get(env.metadata_url, headers={**env.headers, "Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    for _ in range(2):  # built, then kept
        with httpx.stream("GET", env.metadata_url, headers={**env.headers, "Accept-Encoding": "gzip"}) as r:
            assert r.status_code == 200
            assert r.headers["content-encoding"] == "gzip"
            assert "accept-encoding" in r.headers["vary"].lower()
            assert gzip.decompress(b"".join(r.iter_raw())) == plain.content
    refused = httpx.get(env.metadata_url, headers={**env.headers, "Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers and refused.content == plain.content


def test_a_thumbnail_is_kept_and_a_replaced_instance_gets_a_new_one(env: Env) -> None:
    e = env.events[0]
    url = f"{env.url}/studies/{e.study_uid}/series/{e.series_uid}/instances/{e.sop_uid}/thumbnail"
    first = httpx.get(url, headers=env.headers)
    assert first.status_code == 200 and Image.open(io.BytesIO(first.content)).format == "JPEG"
    hidden = Path(e.file_path).with_suffix(".hidden")
    Path(e.file_path).rename(hidden)
    try:
        again = httpx.get(url, headers=env.headers)
        assert again.status_code == 200 and again.content == first.content
    finally:
        hidden.rename(e.file_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(e.file_path)
    ds.PixelData = bytes(len(ds.PixelData))  # one value everywhere
    path = Path(e.file_path).with_name(f"{e.sop_uid}.flat.dcm")
    ds.save_as(path)
    env.index([store_event(path, ds, e.tenant_id)])
    flat = httpx.get(url, headers=env.headers)
    assert flat.status_code == 200 and flat.content != first.content
    low, high = Image.open(io.BytesIO(flat.content)).getextrema()
    assert high - low < 16


def test_the_workers_thumbnail_answers_for_the_instance_it_was_rendered_from(env: Env) -> None:
    from prometheus_client import CollectorRegistry

    from dicomflow.images.worker import ImageWorker
    from dicomflow.metrics.images import ImagesMetrics

    images = dataclasses.replace(env.settings.images, group_id=f"ac_images_{uuid.uuid4().hex[:8]}")
    ImageWorker(dataclasses.replace(env.settings, images=images), ImagesMetrics(CollectorRegistry()),
                until_idle_s=3.0).run()
    with psycopg.connect(env.settings.database.conninfo()) as conn:
        row = conn.execute("SELECT sop_uid, thumbnail_location FROM dicom_image_meta WHERE series_uid = %s"
                           " AND thumbnail_location IS NOT NULL", (env.series.series_uid,)).fetchone()
    assert row is not None
    sop, location = row
    # The same picture as a render of any instance here (the corpus repeats one image): mark the file.
    marked = io.BytesIO()
    Image.new("L", (128, 128), 77).save(marked, format="JPEG")
    made = marked.getvalue()
    Path(location).write_bytes(made)
    base = f"{env.url}/studies/{env.series.study_uid}/series/{env.series.series_uid}"
    carrier = httpx.get(f"{base}/instances/{sop}/thumbnail", headers=env.headers)
    assert carrier.status_code == 200 and carrier.content == made
    assert httpx.get(f"{base}/thumbnail", headers=env.headers).content == made
    other = next(e.sop_uid for e in env.events if e.sop_uid != sop)
    rendered = httpx.get(f"{base}/instances/{other}/thumbnail", headers=env.headers)
    assert rendered.status_code == 200 and rendered.content != made
