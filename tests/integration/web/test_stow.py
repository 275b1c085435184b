"""STOW-RS against the real server: dicomweb-client and raw HTTP in, Kafka and PostgreSQL out."""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from dicomflow.store import PgStore
from tests.integration.ingest_support import read_audit, read_store_events
from tests.integration.web_support import Keys, make_keys, oauth2_settings, running_web

pytestmark = pytest.mark.integration

TENANT = "hospital-x"
FAILED, REFERENCED, REASON, RETRIEVE_URL = "00081198", "00081199", "00081197", "00081190"
SOP_UID = "00081155"
BOUNDARY = "stow-test-boundary"
DATA = Path(pydicom.__file__).parent / "data" / "test_files"


@dataclass
class Stow:
    settings: Settings
    url: str
    keys: Keys

    def client(self, **token: Any) -> DICOMwebClient:
        return DICOMwebClient(self.url, headers={"Authorization": f"Bearer {self.keys.token(tenant=TENANT, **token)}"})

    def post(self, parts: list[tuple[str, bytes]], path: str = "/studies", **token: Any) -> httpx.Response:
        body = b"".join(f"--{BOUNDARY}\r\nContent-Type: {media}\r\n\r\n".encode() + data + b"\r\n"
                        for media, data in parts) + f"--{BOUNDARY}--\r\n".encode()
        headers = {"Authorization": f"Bearer {self.keys.token(tenant=TENANT, **token)}",
                   "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
                   "Accept": "application/dicom+json"}
        return httpx.post(self.url + path, content=body, headers=headers, timeout=60)


@pytest.fixture
def stow(settings: Settings, tmp_path: Path) -> Iterator[Stow]:
    settings = dataclasses.replace(
        settings, worker_node_id="stow-test",
        consumer=dataclasses.replace(settings.consumer, parse_workers=1, batch_max_ms=200),
        web=dataclasses.replace(settings.web, max_stow_bytes=3 * 1024 * 1024),
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


def _read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(DATA / name)


def _uids(doc: dict[str, Any], key: str) -> list[str]:
    return [item[SOP_UID]["Value"][0] for item in doc.get(key, {}).get("Value", [])]


def _reasons(doc: dict[str, Any]) -> dict[str, int]:
    return {(item[SOP_UID].get("Value") or ["?"])[0]: item[REASON]["Value"][0] for item in doc[FAILED]["Value"]}


def test_a_mix_of_good_and_bad_parts(stow: Stow) -> None:
    good = [_read("CT_small.dcm"), _read("MR_small.dcm"), _read("JPEG2000.dcm")]
    no_series = _read("rtplan.dcm")
    del no_series.SeriesInstanceUID
    bad_uid = _read("rtdose.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad_uid.StudyInstanceUID = "1.2.3.not-a-uid"
        answer = stow.client().store_instances([good[0], no_series, good[1], bad_uid, good[2]])
    doc = answer.to_json_dict()
    good_uids = [str(ds.SOPInstanceUID) for ds in good]
    assert _uids(doc, REFERENCED) == good_uids
    assert _reasons(doc) == {str(no_series.SOPInstanceUID): 0xA900, str(bad_uid.SOPInstanceUID): 0xC000}
    urls = [item[RETRIEVE_URL]["Value"][0] for item in doc[REFERENCED]["Value"]]
    assert urls[0].endswith(f"/studies/{good[0].StudyInstanceUID}/series/{good[0].SeriesInstanceUID}"
                       f"/instances/{good[0].SOPInstanceUID}")

    # Raw HTTP: the status codes dicomweb-client hides, and parts it cannot send.
    ct = (DATA / "CT_small.dcm").read_bytes()
    mixed = stow.post([("application/dicom", ct), ("application/dicom", b"not DICOM at all"),
                       ("text/plain", b"hello")])
    assert mixed.status_code == 202, mixed.text
    assert mixed.headers["content-type"] == "application/dicom+json"
    assert _uids(mixed.json(), REFERENCED) == [str(good[0].SOPInstanceUID)]
    assert mixed.json()[RETRIEVE_URL]["Value"] == [f"{stow.url}/studies/{good[0].StudyInstanceUID}"]
    failed = mixed.json()[FAILED]["Value"]
    assert [item[REASON]["Value"][0] for item in failed] == [0xC000, 0xC000]
    other_study = stow.post([("application/dicom", ct)], path="/studies/1.2.3.4.5")
    assert other_study.status_code == 409, other_study.text
    assert _reasons(other_study.json()) == {str(good[0].SOPInstanceUID): 0xA900}
    assert REFERENCED not in other_study.json()
    same_study = stow.post([("application/dicom", ct)], path=f"/studies/{good[0].StudyInstanceUID}")
    assert same_study.status_code == 200, same_study.text
    # The same SOP Instance UID with other content: ingest.duplicates ("reject") decides, as for a C-STORE.
    changed = _read("CT_small.dcm")
    changed.InstitutionName = "Another hospital"
    encoded = io.BytesIO()
    changed.save_as(encoded, enforce_file_format=True)
    duplicate = stow.post([("application/dicom", encoded.getvalue())])
    assert duplicate.status_code == 409, duplicate.text
    assert _reasons(duplicate.json()) == {str(good[0].SOPInstanceUID): 0x0111}

    # Every newly stored part is a store event, acknowledged before the answer, in the token's tenant;
    # the identical re-sends (Success) and the refused duplicate publish nothing.
    events = [e for _, e in read_store_events(stow.settings, stow.settings.topics.main)]
    assert sorted(e.sop_uid for e in events) == sorted(good_uids)
    assert {e.tenant_id for e in events} == {TENANT}
    for e in events:
        assert Path(e.file_path).is_file() and Path(e.file_path).is_relative_to(stow.settings.storage.root.resolve())
        assert f"/{TENANT}/" in e.file_path
    jpeg2000 = next(e for e in events if e.sop_uid == good_uids[2])
    assert jpeg2000.transfer_syntax_uid == "1.2.840.10008.1.2.4.91"
    assert not list((stow.settings.storage.root / ".dicomweb" / "stow").iterdir())  # spool emptied

    # ... and the consumer indexes them like any C-STORE.
    ConsumerService(stow.settings, until_idle_s=3.0).run()
    with psycopg.connect(stow.settings.database.conninfo()) as conn:
        rows = conn.execute("SELECT sop_uid FROM dicom_image_meta WHERE tenant_id = %s", (TENANT,)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(good_uids)
    retrieved = stow.client().retrieve_instance(str(good[1].StudyInstanceUID), str(good[1].SeriesInstanceUID),
                                                str(good[1].SOPInstanceUID), media_types=(("application/dicom", "*"),))
    assert retrieved.SOPInstanceUID == good[1].SOPInstanceUID

    audit = [a for a in read_audit(stow.settings) if a.event_id.code == "110104" and a.event_action == "C"]
    assert any(a.event_outcome == 0 and a.active_participants[0].user_id == "alice" for a in audit)
    assert any(a.event_outcome != 0 for a in audit)


def test_size_limit_and_scopes(stow: Stow) -> None:
    big = os.urandom(4 * 1024 * 1024)
    declared = stow.post([("application/dicom", big)])
    assert declared.status_code == 413, declared.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for i in range(0, len(big), 65536):
            yield big[i:i + 65536]
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    headers = {"Authorization": f"Bearer {stow.keys.token(tenant=TENANT)}",
               "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
    streamed = httpx.post(stow.url + "/studies", content=chunks(), headers=headers, timeout=60)
    assert streamed.status_code == 413, streamed.text

    ct = (DATA / "CT_small.dcm").read_bytes()
    assert stow.post([("application/dicom", ct)], scope="dicomweb.read").status_code == 403
    no_token = httpx.post(stow.url + "/studies", content=b"", headers={"Content-Type": headers["Content-Type"]})
    assert no_token.status_code == 401
    wrong_type = httpx.post(stow.url + "/studies", content=ct, timeout=30, headers={
        "Authorization": headers["Authorization"], "Content-Type": "application/dicom"})
    assert wrong_type.status_code == 415
    assert read_store_events(stow.settings, stow.settings.topics.main) == []

