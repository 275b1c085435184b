"""The OHIF viewer at /viewer/ and CORS, against the real index: a headless Chromium opens the study list and a study.

The data is pydicom's CT and MR samples (each its own study, with an
accession number), sent through the real receiver and consumer. The viewer
is the ``@ohif/app`` build that the local stack installs (``stack up``, as
the ``stack`` fixture does).
"""

from __future__ import annotations

import dataclasses
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pydicom
import pytest
from psycopg import sql
from pydicom.uid import generate_uid

from dicomflow.corpus import pydicom_sample
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings, ohif_dist
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from dicomflow.web.viewer import viewer_url
from tests.integration.browser_support import Chromium
from tests.integration.ingest_support import Sample, running_receiver, send_corpus_with_storescu, with_receiver
from tests.integration.web_support import Keys, make_keys, oauth2_settings, running_web

ALLOWED = "https://viewer.example"
OTHER = "https://elsewhere.example"


@dataclass
class Env:
    settings: Settings  # auth = "none", CORS for ALLOWED
    samples: list[Sample]
    accessions: dict[str, str]  # study UID -> accession number
    keys: Keys
    work: Path


def _corpus(dest: Path) -> tuple[list[Sample], dict[str, str]]:
    """pydicom's CT_small and MR_small, each made its own study with an accession number."""
    dest.mkdir(parents=True)
    samples, accessions = [], {}
    for n, name in enumerate(("CT_small.dcm", "MR_small.dcm")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(pydicom_sample(name))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.AccessionNumber = f"VW{uuid.uuid4().hex[:6].upper()}{n}"
        path = dest / name
        ds.save_as(path, enforce_file_format=True)
        samples.append(Sample(path, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                              str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)))
        accessions[str(ds.StudyInstanceUID)] = str(ds.AccessionNumber)
    return samples, accessions


@pytest.fixture(scope="module")
def env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("viewer")
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    topics = dataclasses.replace(
        base.topics, main=f"viewer_{suffix}", log=f"viewer_log_{suffix}", dicom_state=f"viewer_state_{suffix}",
        dicom_image=f"viewer_image_{suffix}", audit=f"viewer_audit_{suffix}", dlq=f"viewer_{suffix}.dlq", change=f"viewer_change_{suffix}",
        consumer_group_id=f"viewer_{suffix}", partitions=1,
    )
    dbname = f"dicomflow_viewer_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                 sql.Identifier(base.database.user)))
    root = work / "storage"
    root.mkdir()
    web = dataclasses.replace(base.web, host="127.0.0.1", port=free_port(), auth="none", cors_origins=(ALLOWED,))
    settings = dataclasses.replace(
        base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname), web=web,
        consumer=dataclasses.replace(base.consumer, batch_max_ms=200, parse_workers=1),
        storage=dataclasses.replace(base.storage, root=root), worker_node_id="viewer-test",
    )
    create_topics(settings.kafka, topics)
    with PgStore(settings.database) as store:
        store.migrate()
    samples, accessions = _corpus(work / "samples")
    scp = with_receiver(settings)
    with running_receiver(scp):
        runs = send_corpus_with_storescu(scp.receiver.port, samples)
    assert all(r.returncode == 0 for r in runs), [r.stderr[-500:] for r in runs if r.returncode]
    ConsumerService(settings, until_idle_s=3.0).run()
    try:
        yield Env(settings, samples, accessions, make_keys(work), work)
    finally:
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def test_the_local_stack_installed_the_pinned_ohif_build(stack: LocalStack) -> None:
    dist = ohif_dist(stack.settings)
    assert (dist / "index.html").is_file() and (dist / "app-config.js").is_file()
    assert dist.parent.name == f"ohif-{stack.settings.stack.ohif_version}" and (dist.parent / ".complete").is_file()


# ---------------------------------------------------------------------------------------------------- CORS

CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-credentials", "access-control-allow-methods",
                "access-control-allow-headers", "access-control-expose-headers", "access-control-max-age")


def test_cors_answers_the_listed_origin_only(env: Env) -> None:
    study = env.samples[0].study_uid
    with running_web(env.settings) as url, httpx.Client(base_url=url) as http:
        preflight = http.options(f"/studies/{study}/metadata", headers={
            "Origin": ALLOWED, "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, accept, range"})
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] == ALLOWED
        assert preflight.headers["access-control-allow-credentials"] == "true"
        allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "accept", "content-type", "range"} <= allowed
        assert {"GET", "POST"} <= {m.strip() for m in preflight.headers["access-control-allow-methods"].split(",")}

        get = http.get("/studies", headers={"Origin": ALLOWED, "Accept": "application/dicom+json"})
        assert get.status_code == 200 and len(get.json()) == len(env.accessions)
        assert get.headers["access-control-allow-origin"] == ALLOWED  # echoed, never *
        assert get.headers["access-control-allow-credentials"] == "true"
        assert "content-location" in get.headers["access-control-expose-headers"].lower()
        assert "origin" in get.headers["vary"].lower()

        refused = http.options(f"/studies/{study}/metadata", headers={
            "Origin": OTHER, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
        other_get = http.get("/studies", headers={"Origin": OTHER, "Accept": "application/dicom+json"})
        no_origin = http.get("/studies", headers={"Accept": "application/dicom+json"})
    assert refused.status_code >= 400
    assert other_get.status_code == 200 and no_origin.status_code == 200
    for answer in (refused, other_get, no_origin):
        assert not [h for h in CORS_HEADERS if h in answer.headers], answer.headers


# ---------------------------------------------------------------------------------------------------- the viewer


def _shows_every_accession(browser: Chromium, accessions: dict[str, str]) -> bool:
    text = str(browser.evaluate("document.body ? document.body.innerText : ''"))
    return all(a in text for a in accessions.values())


def _open_study_and_check(browser: Chromium, url: str, env: Env, *, token: str | None = None) -> None:
    study = env.samples[0].study_uid
    viewer = viewer_url(dataclasses.replace(env.settings, web=dataclasses.replace(
        env.settings.web, port=int(url.rsplit(":", 1)[1]))), study)
    browser.goto(viewer + (f"&token={token}" if token else ""))
    browser.wait_for("the study's image in a viewport", browser.rendered_viewport, timeout=120)


def test_the_viewer_lists_every_study_and_renders_one(env: Env) -> None:
    with running_web(env.settings) as url, Chromium(env.work / "browser-open") as browser:
        browser.goto(f"{url}/viewer/")
        browser.wait_for("every accession number in the study list", lambda: _shows_every_accession(
            browser, env.accessions))
        _open_study_and_check(browser, url, env)
        browser.screenshot().save(env.work / "viewer.png")
        ours = [a for a in browser.responses if a.url.startswith(url)]
        assert any("/metadata" in a.url for a in ours) and any(a.url.endswith("/viewer/app-config.js") for a in ours)
        assert not browser.answers_at_least(400), browser.answers_at_least(400)
        assert not browser.failures, browser.failures


def test_with_oauth2_the_viewer_works_with_a_token_and_the_api_refuses_without(env: Env) -> None:
    settings = oauth2_settings(env.settings, env.keys, free_port())
    with running_web(settings) as url:
        token = env.keys.token(scope="dicomweb.read")
        # The token as the viewer sends it after an OIDC login: on every request of the study list ...
        with Chromium(env.work / "browser-token", extra_headers={"Authorization": f"Bearer {token}"}) as browser:
            browser.goto(f"{url}/viewer/")
            browser.wait_for("every accession number in the study list", lambda: _shows_every_accession(
                browser, env.accessions))
            assert not browser.answers_at_least(400), browser.answers_at_least(400)
        # ... and OHIF's own ?token= on a study's link.
        with Chromium(env.work / "browser-link") as browser:
            _open_study_and_check(browser, url, env, token=token)
            assert not browser.answers_at_least(400), browser.answers_at_least(400)
        with Chromium(env.work / "browser-anonymous") as browser:
            browser.goto(f"{url}/viewer/")
            refused = browser.wait_for("the API's 401", lambda: [
                a for a in browser.responses if a.status == 401 and "/studies" in a.url], timeout=60)
            assert all(a.url.startswith(url) and "/viewer/" not in a.url for a in refused)
            assert not [a for a in browser.responses if "/viewer/" in a.url and a.status >= 400]
            assert not _shows_every_accession(browser, env.accessions)


def test_a_refusal_to_the_listed_origin_carries_the_cors_headers(env: Env) -> None:
    """With oauth2, the page on the listed origin can read why it was refused (401 without a token)."""
    settings = oauth2_settings(env.settings, env.keys, free_port())
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, cors_origins=(ALLOWED,)))
    with running_web(settings) as url, httpx.Client(base_url=url) as http:
        refused = http.get("/studies", headers={"Origin": ALLOWED})
        allowed = http.get("/studies", headers={"Origin": ALLOWED, "Authorization": f"Bearer {env.keys.token()}"})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED
    assert "www-authenticate" in refused.headers["access-control-expose-headers"].lower()
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ALLOWED
