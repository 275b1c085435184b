"""C-GET and C-MOVE on ``storage.backend = "s3"`` (the shared S3Proxy), both engines: objects spooled, sent byte-equal, spool emptied."""

from __future__ import annotations

import dataclasses
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.blobs.s3 import S3Store
from dicomflow.pipeline.service import ConsumerService
from dicomflow.receiver.scp import Receiver
from dicomflow.settings import Settings
from dicomflow.settings.qr import QrSettings
from dicomflow.stack import free_port
from dicomflow.store import PgStore
from tests.integration.ingest_support import make_topics, storescu, with_receiver
from tests.integration.qr.retrieve_support import dataset_bytes, dcmtk_env, received, storescp
from tests.integration.receiver.test_scp import instance
from tests.integration.receiver.test_scp_s3 import CHUNK, encoded


@pytest.fixture(params=["native", "pynetdicom"])
def s3_qr(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    s3 = dataclasses.replace(settings.storage.s3, prefix=f"test-qr-{uuid.uuid4().hex[:10]}/",
                             multipart_chunk_bytes=CHUNK)
    storage = dataclasses.replace(settings.storage, backend="s3", s3=s3, spool=tmp_path / "spool")
    s = with_receiver(dataclasses.replace(settings, storage=storage, qr=QrSettings(
        enabled=True, destinations={"STORESCP": f"127.0.0.1:{free_port()}"})), engine=request.param)
    make_topics(s)
    with PgStore(s.database) as store:
        store.migrate()
    yield s
    store3 = S3Store(s.storage.s3)
    for info in list(store3.list()):
        store3.delete(info.key)


def test_get_and_move_from_s3_send_the_stored_bytes(s3_qr: Settings, tmp_path: Path) -> None:
    study = "1.2.826.0.1.3680043.8.498.4242"
    datasets = [instance(study=study, series=f"{study}.{i % 2 + 1}") for i in range(4)]
    files = {}
    for i, ds in enumerate(datasets):
        path = tmp_path / f"{i}.dcm"
        path.write_bytes(encoded(ds))
        files[str(ds.SOPInstanceUID)] = path
    receiver = Receiver(s3_qr)
    receiver.start(announce=False)
    try:
        run = storescu(s3_qr.receiver.port, list(files.values()))
        assert run.returncode == 0, run.stderr
        ConsumerService(s3_qr, until_idle_s=3.0).run()
        folder = tmp_path / "got"
        folder.mkdir()
        get = subprocess.run(["/usr/bin/getscu", "-S", "+B", "-aec", "DICOMFLOW", "-od", str(folder), "-k",
                              "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                              str(s3_qr.receiver.port)], env=dcmtk_env(), capture_output=True, text=True, timeout=120)
        assert get.returncode == 0, get.stderr
        got = received(folder)
        assert set(got) == set(files)
        for uid, path in files.items():
            assert dataset_bytes(got[uid]) == dataset_bytes(path)
        port = int(s3_qr.qr.destinations["STORESCP"].rsplit(":", 1)[1])
        with storescp(tmp_path / "moved", port, "+B") as moved:
            move = subprocess.run(["/usr/bin/movescu", "-S", "-aec", "DICOMFLOW", "-aem", "STORESCP", "-k",
                                   "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1",
                                   str(s3_qr.receiver.port)], env=dcmtk_env(), capture_output=True, text=True,
                                  timeout=120)
            assert move.returncode == 0, move.stderr
        assert set(received(moved)) == set(files)
    finally:
        receiver.stop(announce=False)
    leftovers = list(Path(tempfile.gettempdir()).glob("dicomflow-retrieve-*.dcm"))
    assert not leftovers, leftovers  # every spooled object removed after its sub-operation
