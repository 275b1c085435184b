"""DELETE and the change feed over DICOMweb against the real server, Kafka and PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pydicom
import pytest
from pydicom.uid import generate_uid

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.models import AuditEvent
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from dicomflow.store import PgStore
from tests.integration.consumer_support import wait_for
from tests.integration.ingest_support import read_audit
from tests.integration.web_support import Keys, make_keys, oauth2_settings, running_web

pytestmark = pytest.mark.integration

TENANT = "hospital-d"
BOUNDARY = "delete-test-boundary"
DATA = Path(pydicom.__file__).parent / "data" / "test_files"


@dataclass
class Server:
    settings: Settings
    url: str
    keys: Keys

    def headers(self, tenant: str = TENANT, **token: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys.token(tenant=tenant, **token)}"}

    def store(self, files: list[bytes]) -> None:
        body = b"".join(f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + f + b"\r\n"
                        for f in files) + f"--{BOUNDARY}--\r\n".encode()
        headers = {**self.headers(), "Accept": "application/dicom+json",
                   "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}
        answer = httpx.post(self.url + "/studies", content=body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text

    def get(self, path: str, tenant: str = TENANT, **token: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers(tenant, **token), timeout=30)

    def delete(self, path: str, tenant: str = TENANT, **token: Any) -> httpx.Response:
        return httpx.delete(self.url + path, headers=self.headers(tenant, **token), timeout=30)


@pytest.fixture
def server(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    settings = dataclasses.replace(
        settings, worker_node_id="delete-test",
        consumer=dataclasses.replace(settings.consumer, parse_workers=1, batch_max_ms=200),
    )
    create_topics(settings.kafka, settings.topics)
    with PgStore(settings.database) as store:
        store.migrate()
    keys = make_keys(tmp_path)
    web = oauth2_settings(settings, keys, free_port())
    try:
        with running_web(web) as url:
            yield Server(web, url, keys)
    finally:
        delete_topics(settings.kafka, settings.topics.all())


def study_of_three_series(instances_per_series: int = 2) -> tuple[str, list[str], list[bytes]]:
    """One study, three series of CT_small copies with their own UIDs: (study, series UIDs, Part 10 files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = pydicom.dcmread(DATA / "CT_small.dcm")
    study = generate_uid()
    series = [generate_uid() for _ in range(3)]
    files = []
    for se in series:
        for n in range(instances_per_series):
            ds = template.copy()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, se
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.InstanceNumber = n + 1
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
            files.append(out.getvalue())
    return study, series, files


def _series_listed(server: Server, study: str) -> list[str]:
    answer = server.get(f"/studies/{study}/series")
    assert answer.status_code in (200, 204), answer.text
    return sorted(item["0020000E"]["Value"][0] for item in (answer.json() if answer.status_code == 200 else []))


def test_a_deleted_series_is_gone_from_qido_wado_and_postgres_and_audited(server: Server) -> None:
    study, series, files = study_of_three_series()
    server.store(files)
    ConsumerService(server.settings, until_idle_s=3.0).run()
    assert _series_listed(server, study) == sorted(series)
    gone = series[1]
    instances = server.get(f"/studies/{study}/series/{gone}/instances").json()
    sop = instances[0]["00080018"]["Value"][0]

    # Another tenant's token, and the read scope only: nothing is deleted.
    assert server.delete(f"/studies/{study}/series/{gone}", tenant="other-hospital").status_code == 404
    assert server.delete(f"/studies/{study}/series/{gone}", scope="dicomweb.read").status_code == 403
    assert _series_listed(server, study) == sorted(series)

    answer = server.delete(f"/studies/{study}/series/{gone}")
    assert answer.status_code == 204, answer.text
    assert _series_listed(server, study) == sorted(s for s in series if s != gone)
    assert server.get(f"/studies/{study}/series/{gone}/instances/{sop}").status_code == 404
    assert server.get(f"/studies/{study}/series/{gone}/metadata").status_code == 404
    assert server.delete(f"/studies/{study}/series/{gone}").status_code == 404  # once only
    with psycopg.connect(server.settings.database.conninfo()) as conn:
        for table in ("dicom_image_meta", "dicom_object_meta", "dicom_state_meta"):
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE series_uid = %s", (gone,)).fetchone()
            assert count == (0,), table
        log = conn.execute("SELECT action, series_uid FROM dicom_change_log ORDER BY sequence").fetchall()
    assert [a for a, _ in log] == ["create"] * 6 + ["delete"] * 2
    assert {s for a, s in log if a == "delete"} == {gone}

    def audited() -> list[AuditEvent]:  # the web's audit sender publishes in the background
        return [a for a in read_audit(server.settings) if a.event_id.code == "110103" and a.event_action == "D"]

    wait_for("the delete's audit event", lambda: len(audited()) == 1, timeout_s=30, every_s=0.5)
    deletes = audited()
    assert deletes[0].active_participants[0].user_id == "alice"
    assert deletes[0].tenant_id == TENANT
    assert deletes[0].participant_objects[0].object_id == study

    # The change feed: the 6 creates, then the series' deletes, with increasing sequences.
    feed = server.get("/changefeed?includemetadata=false").json()
    assert [e["Action"] for e in feed] == ["create"] * 6 + ["delete"] * 2
    sequences = [e["Sequence"] for e in feed]
    assert sequences == sorted(sequences) and len(set(sequences)) == 8
    assert {e["SeriesInstanceUid"] for e in feed if e["Action"] == "delete"} == {gone}
    assert all(e["State"] == "deleted" for e in feed if e["SeriesInstanceUid"] == gone)
    assert all(e["State"] == "current" for e in feed if e["SeriesInstanceUid"] != gone)
    assert all(e["Metadata"] is None and e["Timestamp"].endswith("Z") for e in feed)
    current = next(n for n, e in enumerate(feed) if e["State"] == "current")
    with_metadata = server.get(f"/changefeed?offset={current}&limit=2").json()
    assert len(with_metadata) == 2 and with_metadata[0]["Metadata"]["0020000D"]["Value"] == [study]
    assert with_metadata[0]["Metadata"]["00080018"]["Value"] == [feed[current]["SopInstanceUid"]]
    assert server.get("/changefeed?offset=6&limit=1&includemetadata=false").json() == feed[6:7]
    assert server.get("/changefeed/latest?includemetadata=false").json() == feed[-1]
    assert server.get("/changefeed", tenant="other-hospital").json() == []
    assert server.get("/changefeed/latest", tenant="other-hospital").status_code == 204
    assert server.get("/changefeed?limit=201").status_code == 400
    assert server.get("/changefeed?startTime=yesterday").status_code == 400

    # An instance, then the whole study.
    rest = [s for s in series if s != gone]
    one = server.get(f"/studies/{study}/series/{rest[0]}/instances").json()[0]["00080018"]["Value"][0]
    assert server.delete(f"/studies/{study}/series/{rest[0]}/instances/{one}").status_code == 204
    assert server.get(f"/studies/{study}/series/{rest[0]}/instances/{one}").status_code == 404
    assert server.delete(f"/studies/{study}").status_code == 204
    assert server.get(f"/studies?StudyInstanceUID={study}").json() == []
    assert server.delete(f"/studies/{study}").status_code == 404


def test_change_feed_paging_returns_every_entry_exactly_once(server: Server) -> None:
    import datetime as dt

    study, series, files = study_of_three_series(instances_per_series=4)
    server.store(files[:6])
    ConsumerService(server.settings, until_idle_s=2.0).run()
    middle = dt.datetime.now(dt.UTC)
    server.store(files[6:])
    ConsumerService(server.settings, until_idle_s=2.0).run()
    assert server.delete(f"/studies/{study}/series/{series[0]}").status_code == 204
    everything = server.get("/changefeed?includemetadata=false&limit=200").json()
    assert len(everything) == 12 + 4
    for limit in (1, 5, 7):
        pages: list[dict[str, Any]] = []
        while page := server.get(f"/changefeed?includemetadata=false&offset={len(pages)}&limit={limit}").json():
            assert len(page) <= limit
            pages.extend(page)
        assert pages == everything
    stamp = middle.isoformat().replace("+00:00", "Z")
    before = server.get(f"/changefeed?includemetadata=false&endTime={stamp}&limit=200").json()
    after = server.get(f"/changefeed?includemetadata=false&startTime={stamp}&limit=200").json()
    assert before + after == everything
    assert [e["Action"] for e in before] == ["create"] * 6
    assert server.get("/changefeed?limit=0").status_code == 400
    assert len(server.get("/changefeed?includemetadata=false").json()) == 16  # default limit 100


def test_a_page_of_the_feed_carries_each_current_entrys_metadata_and_null_for_an_unreadable_one(server: Server) -> None:
    study, series, files = study_of_three_series()
    server.store(files)
    ConsumerService(server.settings, until_idle_s=3.0).run()
    assert server.delete(f"/studies/{study}/series/{series[2]}").status_code == 204
    with psycopg.connect(server.settings.database.conninfo()) as conn:
        sop, path = conn.execute("SELECT sop_uid, file_path FROM dicom_object_meta WHERE series_uid = %s "
                                 "ORDER BY sop_uid LIMIT 1", (series[0],)).fetchone() or ("", "")
    Path(path).unlink()  # its metadata cannot be built: that entry alone says null

    feed = server.get("/changefeed?limit=200").json()
    assert len(feed) == 8
    for e in feed:
        if e["State"] == "deleted" or e["SopInstanceUid"] == sop:
            assert e["Metadata"] is None, e
        else:
            assert e["Metadata"]["00080018"]["Value"] == [e["SopInstanceUid"]]
            assert e["Metadata"]["0020000E"]["Value"] == [e["SeriesInstanceUid"]]
    assert sum(e["Metadata"] is not None for e in feed) == 3
