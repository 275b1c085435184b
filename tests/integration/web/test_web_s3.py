"""DICOMweb on the ``s3`` backend: instances in the shared stack's S3Proxy, nothing read from local disk.

A corpus is indexed by the real consumer on the filesystem backend, moved to
S3 by ``storage migrate`` (the index rows then name ``s3://…``), and the
local files are removed; then ``dicomflow web`` runs with ``backend = "s3"``
and is read with ``dicomweb-client``. Its S3 endpoint goes through a TCP
relay of the test, which is closed to make S3 unreachable (503 with
Retry-After) and opened again (served again).
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import socket
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psycopg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image

from dicomflow.blobs.s3 import S3Store
from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings
from dicomflow.stack import LocalStack, free_port
from dicomflow.storage_migrate import MigrateOptions, Migration
from dicomflow.store import PgStore
from tests.integration.web_support import running_web

pytestmark = pytest.mark.integration


class Relay:
    """A TCP relay 127.0.0.1:port -> target, that can be closed (connection refused) and opened again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def close(self) -> None:
        if self._server is not None:
            try:
                self._server.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread, so the port is free
            except OSError:
                pass
            self._server.close()
            self._server = None
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class Env:
    settings: Settings
    url: str
    relay: Relay
    store: S3Store
    originals: dict[str, bytes]  # SOP UID -> the file's bytes as stored
    rows: dict[str, tuple[str, str, str]]  # SOP UID -> (study, series, file_path)

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.url)

    def instance_url(self, sop: str) -> str:
        study, series, _ = self.rows[sop]
        return f"{self.url}/studies/{study}/series/{series}/instances/{sop}"


@pytest.fixture(scope="module")
def env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    base = stack.settings
    if not base.storage.s3.endpoint:
        pytest.skip("the shared stack runs without S3Proxy (dicomflow stack up --s3)")
    work = tmp_path_factory.mktemp("web-s3")
    suffix = uuid.uuid4().hex[:10]
    topics = dataclasses.replace(
        base.topics, main=f"webs3_{suffix}", log=f"webs3_log_{suffix}", dicom_state=f"webs3_state_{suffix}",
        dicom_image=f"webs3_image_{suffix}", audit=f"webs3_audit_{suffix}", dlq=f"webs3_{suffix}.dlq", change=f"webs3_change_{suffix}",
        consumer_group_id=f"webs3_{suffix}", partitions=1)
    dbname = f"dicomflow_webs3_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER "{base.database.user}"')
    root = work / "storage"
    root.mkdir()
    s3 = dataclasses.replace(base.storage.s3, prefix=f"webs3-{suffix}/")
    settings = dataclasses.replace(
        base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname),
        consumer=dataclasses.replace(base.consumer, parse_workers=1, batch_max_ms=200),
        storage=dataclasses.replace(base.storage, root=root, s3=s3, backend="filesystem"))
    create_topics(settings.kafka, topics)
    with PgStore(settings.database) as pg:
        pg.migrate()
    corpus = make_corpus(root, 9, studies=1, series_per_study=3, templates=("CT_small.dcm", "rtdose.dcm", "JPEG2000.dcm"))
    originals = {e.sop_uid: Path(e.file_path).read_bytes() for e in corpus.events}
    with Publisher(settings.kafka, topics) as publisher:
        publisher.send_store_events(corpus.events).raise_for_failures()
    ConsumerService(settings, until_idle_s=3.0).run()
    summary = Migration(settings.storage, settings.database, MigrateOptions(to="s3")).run()
    assert not summary.failed and summary.copied == len(corpus.events), summary
    shutil.rmtree(root)
    root.mkdir()  # only the web's local caches live here now
    endpoint = urlsplit(s3.endpoint)
    relay = Relay((endpoint.hostname or "127.0.0.1", endpoint.port or 80))
    relay.open()
    served = dataclasses.replace(
        settings, storage=dataclasses.replace(settings.storage, backend="s3",
                                              s3=dataclasses.replace(s3, endpoint=f"http://127.0.0.1:{relay.port}")),
        web=dataclasses.replace(settings.web, host="127.0.0.1", port=free_port(), auth="none"))
    with psycopg.connect(settings.database.conninfo()) as conn:
        rows = {r[0]: (r[1], r[2], r[3]) for r in conn.execute(
            "SELECT sop_uid, study_uid, series_uid, file_path FROM dicom_object_meta")}
    assert rows and all(r[2].startswith(f"s3://{s3.bucket}/{s3.prefix}") for r in rows.values()), rows
    try:
        with running_web(served) as url:
            yield Env(served, url, relay, S3Store(s3), originals, rows)
    finally:
        relay.close()
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        store = S3Store(s3)
        for info in list(store.list()):
            store.delete(info.key)


def _series(env: Env) -> dict[tuple[str, str], list[str]]:
    out: dict[tuple[str, str], list[str]] = {}
    for sop, (study, series, _) in env.rows.items():
        out.setdefault((study, series), []).append(sop)
    return out


def _read(data: bytes) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def test_instances_and_series_are_byte_equal_from_s3(env: Env) -> None:
    client = env.client()
    for (study, series), sops in _series(env).items():
        for sop in sops:
            ds = client.retrieve_instance(study, series, sop, media_types=(("application/dicom", "*"),))
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            raw = httpx.get(env.instance_url(sop), headers={"Accept": 'multipart/related; type="application/dicom";'
                                                                       " transfer-syntax=*"})
            assert raw.status_code == 200 and int(raw.headers["content-length"]) == len(raw.content)
            assert env.originals[sop] in raw.content  # the stored bytes, unchanged
        got = client.retrieve_series(study, series, media_types=(("application/dicom", "*"),))
        assert sorted(str(d.SOPInstanceUID) for d in got) == sorted(sops)


def test_metadata_from_s3_matches_the_headers(env: Env) -> None:
    client = env.client()
    for (study, series), sops in _series(env).items():
        docs = client.retrieve_series_metadata(study, series)
        assert sorted(d["00080018"]["Value"][0] for d in docs) == sorted(sops)
        for doc in docs:
            sop = doc["00080018"]["Value"][0]
            header = _read(env.originals[sop])
            if "Rows" in header:
                assert doc["00280010"]["Value"] == [header.Rows]
    cached = [p for p in env.settings.storage.root.rglob("*.json") if not p.name.startswith("_")]
    assert len(cached) == len(env.rows)  # the metadata cache is local, under storage.root
    answers = list(env.settings.storage.root.rglob("_series.*.json"))
    assert len(answers) == len(_series(env))  # and each series' whole answer
    again = {(st, se): client.retrieve_series_metadata(st, se) for st, se in _series(env)}  # from the answers
    for (study, series), docs in again.items():
        assert sorted(d["00080018"]["Value"][0] for d in docs) == sorted(_series(env)[(study, series)])


def test_a_frame_and_a_rendered_image_from_s3(env: Env) -> None:
    client = env.client()
    for sop, (study, series, _) in env.rows.items():
        ds = _read(env.originals[sop])
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        wanted = frames  # the last frame: found by offset, not by reading the whole object
        got = client.retrieve_instance_frames(study, series, sop, frame_numbers=[wanted],
                                              media_types=("application/octet-stream",))
        assert len(got) == 1
        if not ds.file_meta.TransferSyntaxUID.is_compressed:
            size = len(ds.PixelData) // frames
            assert got[0] == ds.PixelData[(wanted - 1) * size:wanted * size]
        else:
            assert len(got[0]) == int(ds.Rows) * int(ds.Columns) * int(ds.SamplesPerPixel) * int(ds.BitsAllocated) // 8
        answer = httpx.get(env.instance_url(sop) + "/rendered?viewport=64,64", headers={"Accept": "image/png"})
        assert answer.status_code == 200, answer.text
        with Image.open(io.BytesIO(answer.content)) as image:
            assert image.format == "PNG" and max(image.size) == 64


def test_a_missing_object_is_404(env: Env) -> None:
    sop = next(iter(env.rows))
    key = env.store.key_of(env.rows[sop][2])
    data = env.store.read(key)
    env.store.delete(key)
    try:
        for suffix in ("", "/metadata", "/frames/1", "/rendered"):
            answer = httpx.get(env.instance_url(sop) + suffix, headers={"Accept": "*/*"})
            if suffix == "/metadata" and answer.status_code == 200:
                continue  # built and cached by an earlier test: served from the local cache
            assert answer.status_code == 404, (suffix, answer.status_code, answer.text)
    finally:
        env.store.put(key, data)


def test_an_unreachable_s3_is_503_with_retry_after_then_served_again(env: Env) -> None:
    sop = next(iter(env.rows))
    env.relay.close()
    try:
        answer = httpx.get(env.instance_url(sop), headers={"Accept": "*/*"}, timeout=60)
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) > 0
        study, series, _ = env.rows[sop]
        series_answer = httpx.get(f"{env.url}/studies/{study}/series/{series}", headers={"Accept": "*/*"}, timeout=60)
        assert series_answer.status_code == 503
    finally:
        env.relay.open()
    answer = httpx.get(env.instance_url(sop), headers={"Accept": "*/*"}, timeout=60)
    assert answer.status_code == 200 and env.originals[sop] in answer.content
