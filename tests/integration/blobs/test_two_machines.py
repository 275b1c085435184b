"""Two machines, simulated: the receiver writes into S3 from one folder; everything else runs from another.

"Machine A" is a working folder with its own storage root and receive spool,
where ``dicomflow scp`` runs as a process of its own. Once every instance is
acknowledged the receiver stops and machine A's folder is deleted: nothing it
wrote locally survives. "Machine B" is another folder with another (empty)
storage root: ``dicomflow consume`` and ``dicomflow images`` run there as
processes, ``dicomflow web`` in this process with B's settings. The only
things the two share are Kafka, PostgreSQL and the bucket, as two hosts of
one deployment would.

Checked: every instance indexed in PostgreSQL, each retrievable over WADO-RS
(dicomweb-client) byte-equal to what the receiver stored, and every series
with pixels thumbnailed, its thumbnail an object in the bucket.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient

from dicomflow.blobs import open_store
from dicomflow.settings import Settings, StorageS3Settings, to_child_env
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from tests.integration.consumer_support import wait_for
from tests.integration.ingest_support import build_sample_corpus, make_topics, send_corpus_with_storescu
from tests.integration.s3_support import client_settings, private_s3proxy
from tests.integration.web_support import running_web

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(stack: LocalStack) -> Iterator[StorageS3Settings]:
    with private_s3proxy(stack.settings) as server:
        yield client_settings(server)


def _machine(settings: Settings, folder: Path, s3: StorageS3Settings, prefix: str) -> Settings:
    """The settings of one "machine": s3 backend, a storage root and a spool of its own under ``folder``."""
    folder.mkdir(parents=True)
    storage = dataclasses.replace(settings.storage, backend="s3", root=folder / "storage", spool=folder / "spool",
                                  s3=dataclasses.replace(s3, prefix=prefix))
    web = dataclasses.replace(settings.web, host="127.0.0.1", port=free_port(), auth="none")
    receiver = dataclasses.replace(settings.receiver, port=free_port(), host="127.0.0.1")
    return dataclasses.replace(settings, storage=storage, web=web, receiver=receiver)


def _start(settings: Settings, folder: Path, *args: str) -> subprocess.Popen[bytes]:
    with (folder / f"{args[0]}.log").open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen([sys.executable, "-m", "dicomflow", *args], env=to_child_env(settings, os.environ),
                                cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    return process.wait(60)


def _rows(settings: Settings, sql: str) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.database.conninfo()) as conn:
        return conn.execute(sql).fetchall()


def _data_set(raw: bytes) -> bytes:
    """The bytes after the File Meta group (the meta names the sender and may differ)."""
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(raw), stop_before_pixels=False)
    offset = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return raw[offset:]


def test_receiver_on_one_machine_everything_else_on_another(settings: Settings, s3: StorageS3Settings,
                                                            tmp_path: Path) -> None:
    prefix = f"two-machines-{uuid.uuid4().hex[:8]}/"
    machine_a = _machine(settings, tmp_path / "machine-a", s3, prefix)
    make_topics(machine_a)
    with PgStore(machine_a.database) as index:
        index.migrate()
    samples = build_sample_corpus(tmp_path / "outbox")
    folder_a = tmp_path / "machine-a"
    receiver = _start(machine_a, folder_a, "scp")
    try:
        wait_for("the receiver to listen", lambda: _listening(machine_a.receiver.port) or receiver.poll() is not None)
        assert receiver.poll() is None, (folder_a / "scp.log").read_text()[-3000:]
        for sent in send_corpus_with_storescu(machine_a.receiver.port, samples):
            assert sent.returncode == 0, sent.stderr[-3000:]
    finally:
        assert _stop(receiver) == 0, (folder_a / "scp.log").read_text()[-3000:]
    store = open_store(machine_a.storage)
    keys = {Path(i.key).name.removesuffix(".dcm"): i.key for i in store.list() if i.key.endswith(".dcm")
            and not Path(i.key).name.startswith(".")}
    assert set(keys) == {s.sop_uid for s in samples}
    assert not list((folder_a / "spool").rglob("*.dcm")), "the spool holds nothing for an acknowledged instance"
    shutil.rmtree(folder_a)  # machine A is gone: its storage root and spool with it

    folder_b = tmp_path / "machine-b"
    machine_b = _machine(settings, folder_b, s3, prefix)
    consumer = _start(machine_b, folder_b, "consume")
    try:
        wait_for("every instance indexed", lambda: len(_rows(machine_b, "SELECT sop_uid FROM dicom_image_meta"))
                 >= len(samples) or consumer.poll() is not None, timeout_s=120)
        assert consumer.poll() is None, (folder_b / "consume.log").read_text()[-3000:]
        images = subprocess.run([sys.executable, "-m", "dicomflow", "images", "--until-idle", "5"],
                                env=to_child_env(machine_b, os.environ), cwd=folder_b, capture_output=True,
                                text=True, timeout=300)
        assert images.returncode == 0, images.stdout[-2000:] + images.stderr[-3000:]
    finally:
        _stop(consumer)

    indexed = {str(r[0]): str(r[1]) for r in _rows(machine_b, "SELECT sop_uid, file_path FROM dicom_object_meta")}
    assert set(indexed) == {s.sop_uid for s in samples}
    assert all(path.startswith(f"s3://{s3.bucket}/{prefix}") for path in indexed.values()), indexed
    thumbnails = [str(r[0]) for r in _rows(machine_b, "SELECT thumbnail_location FROM dicom_image_meta "
                                                      "WHERE thumbnail_location IS NOT NULL")]
    assert thumbnails, "no series was thumbnailed"
    for location in thumbnails:
        assert location.startswith("s3://") and store.exists(store.key_of(location)), location

    with running_web(machine_b) as base:
        client = DICOMwebClient(base)
        for sample in samples:
            got = client.retrieve_instance(sample.study_uid, sample.series_uid, sample.sop_uid)
            assert got.SOPInstanceUID == sample.sop_uid
            stored = store.read(keys[sample.sop_uid])
            raw = _wado_bytes(base, sample.study_uid, sample.series_uid, sample.sop_uid)
            assert _data_set(raw) == _data_set(stored), sample.sop_uid
    assert not any(folder_b.joinpath("storage").rglob("*.dcm")), "machine B keeps no instance locally"


def _wado_bytes(base: str, study: str, series: str, sop: str) -> bytes:
    """The instance's Part 10 bytes as WADO-RS sends them (application/dicom, transfer syntax as stored)."""
    import urllib.request

    request = urllib.request.Request(
        f"{base}/studies/{study}/series/{series}/instances/{sop}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    with urllib.request.urlopen(request, timeout=60) as response:
        body: bytes = response.read()
        content_type = response.headers["Content-Type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    part = body.split(f"--{boundary}".encode())[1]
    return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


