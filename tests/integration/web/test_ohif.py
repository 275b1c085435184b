"""What OHIF 3.13 asks of a DICOMweb server, asked of ``dicomflow web`` by the real ``dicomweb-client``.

The study list's searches are those of OHIF's ``DicomWebDataSource/qido.js``
(``mapParams``): ``*x*`` wildcards on PatientName, PatientID (by tag),
AccessionNumber and StudyDescription, ModalitiesInStudy as a comma list,
StudyDate ranges, ``fuzzymatching``, ``includefield``, ``limit=101&offset=0``;
the image loader's frame request is
``multipart/related; type=application/octet-stream; transfer-syntax=*``.
The data: a few studies made here with known names, dates and times, and
pydicom's multi-frame samples, stored by STOW-RS and indexed by the consumer.
"""

from __future__ import annotations

import dataclasses
import io
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from psycopg import sql
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings, ohif_dist
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from dicomflow.web.viewer import viewer_url
from tests.conftest import PYDICOM_DATA
from tests.integration.web_support import Keys, make_keys, oauth2_settings, running_web

#: (PatientName, PatientID, AccessionNumber, StudyDescription, StudyDate, StudyTime or None, Modality)
STUDIES = [
    ("Doe^John", "PID-1001", "ACC1001", "CHEST CT", "20240101", "220000", "CT"),
    ("Smith^Anna^Marie", "PID-2002", "ACC2002", "Head MR", "20240102", "053000", "MR"),
    ("Johnson^Bob", "X-3003", "B3003", "ABDOMEN", "20240102", "070000", "CT"),
    ("Yamada^Tarou=山田^太郎", "PID-4004", "ACC4004", "chest low dose", "20240315", None, "CT"),
]
#: pydicom's multi-frame samples: JPEG Baseline (30 frames), RLE (2 frames, RGB), native 32-bit (15 frames).
MULTI_FRAME = ("examples_ybr_color.dcm", "SC_rgb_rle_2frame.dcm", "rtdose.dcm")
OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"


@dataclass
class Env:
    settings: Settings
    url: str
    keys: Keys
    #: PatientID -> (study, series, sop) of the made studies; file name -> the same for the multi-frame ones.
    made: dict[str, tuple[str, str, str]]
    multi: dict[str, tuple[str, str, str]]
    originals: dict[str, Dataset]

    def client(self) -> DICOMwebClient:
        return DICOMwebClient(self.url, headers={"Authorization": f"Bearer {self.keys.token()}"})

    def get(self, path: str, accept: str | None = None, **params: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys.token()}"}
        if accept is not None:
            headers["Accept"] = accept
        return httpx.get(self.url + path, params=params, headers=headers, timeout=60)

    def instance(self, name: str) -> str:
        study, series, sop = self.multi[name]
        return f"/studies/{study}/series/{series}/instances/{sop}"


def _read(name: str) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(next((PYDICOM_DATA / "test_files").rglob(name)))


def _renamed(ds: Dataset) -> tuple[str, str, str]:
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def _made_studies() -> tuple[list[Dataset], dict[str, tuple[str, str, str]]]:
    out, uids = [], {}
    for name, pid, accession, description, date, time, modality in STUDIES:
        ds = _read("CT_small.dcm")
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName, ds.PatientID, ds.AccessionNumber = name, pid, accession
        ds.StudyDescription, ds.StudyDate, ds.Modality = description, date, modality
        if time is None:
            del ds.StudyTime
        else:
            ds.StudyTime = time
        uids[pid] = _renamed(ds)
        out.append(ds)
    return out, uids


@pytest.fixture(scope="module")
def env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Studies stored by STOW-RS (dicomweb-client) into a fresh database, indexed by one consumer run."""
    work = tmp_path_factory.mktemp("ohif")
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    topics = dataclasses.replace(
        base.topics, main=f"ohif_{suffix}", log=f"ohif_log_{suffix}", dicom_state=f"ohif_state_{suffix}",
        dicom_image=f"ohif_image_{suffix}", audit=f"ohif_audit_{suffix}", dlq=f"ohif_{suffix}.dlq",
        consumer_group_id=f"ohif_{suffix}", partitions=1,
    )
    dbname = f"dicomflow_ohif_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                  sql.Identifier(base.database.user)))
    (work / "storage").mkdir()
    consumer = dataclasses.replace(base.consumer, batch_max_messages=200, batch_max_ms=200, parse_workers=1)
    settings = dataclasses.replace(
        base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname), consumer=consumer,
        storage=dataclasses.replace(base.storage, root=work / "storage"), worker_node_id="ohif-test",
    )
    create_topics(settings.kafka, topics)
    with PgStore(settings.database) as store:
        store.migrate()
    keys = make_keys(work)
    web = oauth2_settings(settings, keys, free_port())
    datasets, made = _made_studies()
    multi, originals = {}, {}
    for name in MULTI_FRAME:
        ds = _read(name)
        ds.PatientName, ds.PatientID, ds.StudyDate = "Multi^Frame", "PID-9009", "20230601"
        multi[name] = _renamed(ds)
        originals[name] = _read(name)
        datasets.append(ds)
    try:
        with running_web(web) as url:
            client = DICOMwebClient(url, headers={"Authorization": f"Bearer {keys.token()}"})
            answer = client.store_instances(datasets)
            assert len(answer.get("ReferencedSOPSequence", [])) == len(datasets), answer
            ConsumerService(settings, until_idle_s=3.0).run()
            yield Env(web, url, keys, made, multi, originals)
    finally:
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _pids(results: list[dict[str, Any]]) -> set[str]:
    return {r["00100020"]["Value"][0] for r in results}


# --------------------------------------------------------------------------- the study list


def _study_list(env: Env, *, fuzzy: bool = False, **filters: Any) -> list[dict[str, Any]]:
    """One search as OHIF's study list makes it (mapParams), with supportsWildcard on."""
    search = {k: f"*{v}*" if k in ("PatientName", "00100020", "AccessionNumber", "StudyDescription") else v
              for k, v in filters.items()}
    return env.client().search_for_studies(search_filters=search, fuzzymatching=fuzzy, limit=101, offset=0,
                                           fields=["00081030", "00080060", "00080090", "00100030"])


def test_each_study_list_filter_as_ohif_sends_it(env: Env) -> None:
    everyone = {s[1] for s in STUDIES} | {"PID-9009"}
    assert _pids(_study_list(env)) == everyone
    assert _pids(_study_list(env, PatientName="doe")) == {"PID-1001"}  # names: case-insensitive
    assert _pids(_study_list(env, PatientName="山田")) == {"PID-4004"}
    assert _pids(_study_list(env, **{"00100020": "PID-"})) == {"PID-1001", "PID-2002", "PID-4004", "PID-9009"}
    assert _pids(_study_list(env, AccessionNumber="300")) == {"X-3003"}
    assert _pids(_study_list(env, StudyDescription="CHEST")) == {"PID-1001"}  # LO: case-sensitive (PS3.4)
    assert _pids(_study_list(env, StudyDescription="chest")) == {"PID-4004"}
    assert _pids(_study_list(env, ModalitiesInStudy="MR")) == {"PID-2002"}
    assert _pids(_study_list(env, ModalitiesInStudy="MR,CT")) == {"PID-1001", "PID-2002", "X-3003", "PID-4004"}
    assert _pids(_study_list(env, StudyDate="20240102-20240315")) == {"PID-2002", "X-3003", "PID-4004"}
    assert _pids(_study_list(env, StudyDate="19700102-20240101")) == {"PID-1001", "PID-9009"}
    assert _pids(_study_list(env, StudyDate="20240102-")) == {"PID-2002", "X-3003", "PID-4004"}
    assert _pids(_study_list(env, StudyDate="-20231231")) == {"PID-9009"}
    uids = [env.made["PID-1001"][0], env.made["X-3003"][0]]
    assert _pids(_study_list(env, StudyInstanceUID="\\".join(uids))) == {"PID-1001", "X-3003"}


def test_the_study_list_answer_has_what_it_asked_to_include(env: Env) -> None:
    (doe,) = _study_list(env, PatientName="doe")
    assert doe["00081030"] == {"vr": "LO", "Value": ["CHEST CT"]}  # includefield StudyDescription
    assert doe["00080061"]["Value"] == ["CT"] and doe["00080050"]["Value"] == ["ACC1001"]
    assert doe["00080020"]["Value"] == ["20240101"] and doe["00080030"]["Value"][0].startswith("220000")
    assert "00080090" not in doe  # ReferringPhysicianName is not in the index: not answered, not refused


@pytest.mark.parametrize(("name", "expected"), [
    ("jo do", {"PID-1001"}),               # each word begins a component (Azure's example)
    ("DOE", {"PID-1001"}),
    ("Doe^J", {"PID-1001"}),
    ("mar", {"PID-2002"}),                 # a middle name
    ("jo", {"PID-1001", "X-3003"}),        # John, Johnson
    ("ohn", set()),                        # not the start of any component
    ("太", {"PID-4004"}),                  # the ideographic group's components
    ("smith anna", {"PID-2002"}),
    ("smith bob", set()),                  # every word must match
])
def test_fuzzy_matching_of_patient_names(env: Env, name: str, expected: set[str]) -> None:
    got = env.client().search_for_studies(search_filters={"PatientName": name}, fuzzymatching=True)
    assert _pids(got) == expected
    literal = env.client().search_for_studies(search_filters={"PatientName": name}, fuzzymatching=False)
    assert _pids(literal) <= expected  # literal matching of a partial name finds no more


def test_study_time_and_combined_date_time_ranges(env: Env) -> None:
    client = env.client()

    def pids(**filters: str) -> set[str]:
        return _pids(client.search_for_studies(search_filters=filters))

    assert pids(StudyTime="0500-0800") == {"PID-2002", "X-3003"}
    assert pids(StudyTime="22") == {"PID-1001"}
    # combined: from 1 January 21:00 to 2 January 06:00 (not 07:00, and not every day's evening)
    assert pids(StudyDate="20240101-20240102", StudyTime="2100-0600") == {"PID-1001", "PID-2002"}
    assert pids(StudyDate="20240102", StudyTime="0600-") == {"X-3003"}
    assert pids(StudyDate="20240101-", StudyTime="2300-") == {"PID-2002", "X-3003", "PID-4004"}  # later days whole
    assert pids(StudyDate="20240315", StudyTime="0000-2359") == set()  # no StudyTime: no match on its day


def test_limit_and_offset_page_in_a_stable_order(env: Env) -> None:
    client = env.client()
    every = [r["0020000D"]["Value"][0] for r in client.search_for_studies()]
    pages = [client.search_for_studies(limit=2, offset=o) for o in range(0, len(every) + 2, 2)]
    assert [r["0020000D"]["Value"][0] for page in pages for r in page] == every
    series = client.search_for_instances(study_instance_uid=env.multi["rtdose.dcm"][0],
                                         series_instance_uid=env.multi["rtdose.dcm"][1], limit=1,
                                         fields=["00080018"])  # OHIF's thumbnail lookup
    assert [r["00080018"]["Value"][0] for r in series] == [env.multi["rtdose.dcm"][2]]


# --------------------------------------------------------------------------- frames


def _parts(answer: httpx.Response) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of each part of a multipart/related answer."""
    boundary = answer.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
    out = []
    for chunk in answer.content.split(f"--{boundary}".encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        media = next(line.split(b":", 1)[1].strip().decode() for line in head.split(b"\r\n")
                     if line.lower().startswith(b"content-type"))
        out.append((media, body[:-2]))
    return out


def test_ohif_frame_request_gets_compressed_frames_as_stored(env: Env) -> None:
    from pydicom.encaps import generate_frames

    for name, ts in (("examples_ybr_color.dcm", "1.2.840.10008.1.2.4.50"), ("SC_rgb_rle_2frame.dcm",
                                                                           "1.2.840.10008.1.2.5")):
        original = env.originals[name]
        stored = list(generate_frames(original.PixelData, number_of_frames=int(original.NumberOfFrames)))
        answer = env.get(env.instance(name) + "/frames/1,2", accept=OHIF_FRAMES)
        assert answer.status_code == 200, answer.text
        assert _parts(answer) == [(f"application/octet-stream; transfer-syntax={ts}", stored[0]),
                                  (f"application/octet-stream; transfer-syntax={ts}", stored[1])]
        quoted = env.client().retrieve_instance_frames(*env.multi[name], frame_numbers=[2],
                                                       media_types=(("application/octet-stream", "*"),))
        assert quoted == [stored[1]]


def test_native_frames_stay_native_and_plain_octet_stream_is_decoded(env: Env) -> None:
    dose = env.originals["rtdose.dcm"]
    size = dose.Rows * dose.Columns * dose.BitsAllocated // 8
    answer = env.get(env.instance("rtdose.dcm") + "/frames/15", accept=OHIF_FRAMES)
    assert _parts(answer) == [("application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1",
                               dose.PixelData[14 * size:])]
    rle = env.originals["SC_rgb_rle_2frame.dcm"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = rle.pixel_array[1]
    native = env.client().retrieve_instance_frames(*env.multi["SC_rgb_rle_2frame.dcm"], frame_numbers=[2],
                                                   media_types=("application/octet-stream",))
    assert native == [np.ascontiguousarray(expected).tobytes()]


def test_frames_in_a_syntax_that_cannot_be_made_are_406_naming_what_is_offered(env: Env) -> None:
    jls = "1.2.840.10008.1.2.4.80"
    answer = env.get(env.instance("SC_rgb_rle_2frame.dcm") + "/frames/1",
                     accept=f"multipart/related; type=application/octet-stream; transfer-syntax={jls}")
    assert answer.status_code == 406
    assert answer.headers["content-type"].startswith("text/plain")
    assert f"asks for application/octet-stream; transfer-syntax={jls}" in answer.text
    assert "image/x-dicom-rle; transfer-syntax=1.2.840.10008.1.2.5" in answer.text
    assert "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1" in answer.text


# --------------------------------------------------------------------------- rendered


@pytest.mark.parametrize("name", MULTI_FRAME)
def test_every_frame_renders_and_the_instance_renders_its_first_frame(env: Env, name: str) -> None:
    client = env.client()
    count = int(env.originals[name].NumberOfFrames)
    images = []
    for n in range(1, count + 1):
        png = client.retrieve_instance_frames_rendered(*env.multi[name], frame_numbers=[n], media_types=("image/png",))
        image = Image.open(io.BytesIO(png))
        assert image.size == (env.originals[name].Columns, env.originals[name].Rows)
        images.append(png)
    whole = client.retrieve_instance_rendered(*env.multi[name], media_types=("image/png",))
    assert whole == images[0]
    assert env.get(env.instance(name) + f"/frames/{count + 1}/rendered").status_code == 404
    jpeg = env.get(env.instance(name) + "/rendered", accept="image/jpeg")
    assert jpeg.status_code == 200 and Image.open(io.BytesIO(jpeg.content)).format == "JPEG"


def test_a_single_frame_instance_renders(env: Env) -> None:
    study, series, sop = env.made["PID-1001"]
    png = env.client().retrieve_instance_rendered(study, series, sop, media_types=("image/png",))
    assert Image.open(io.BytesIO(png)).size == (128, 128)


# --------------------------------------------------------------------------- 406


@pytest.mark.parametrize(("path", "accept", "reason"), [
    ("/studies", "application/dicom+xml",
     "asks for application/dicom+xml; a search's answer is offered as application/dicom+json, application/json"),
    ("/studies", 'multipart/related; type="application/dicom+xml"', "asks for application/dicom+xml"),
    ("{instance}/metadata", "application/dicom+xml",
     "asks for application/dicom+xml; metadata is offered as application/dicom+json, application/json"),
    ("{instance}/rendered", "image/gif", "asks for image/gif; rendered images are offered as image/jpeg, image/png"),
    ("{instance}/frames/1/rendered", "video/mp4", "asks for video/mp4; rendered images are offered as image/jpeg"),
    ("{instance}/thumbnail", "application/pdf", "asks for application/pdf; rendered images are offered as"),
    ("{instance}/bulkdata/7FE00010", "image/jpeg", "asks for image/jpeg; bulk data is offered as application/octet-stream"),
    ("{instance}", 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
     "cannot send transfer syntax 1.2.840.10008.1.2.4.50"),
])
def test_an_accept_that_cannot_be_met_is_406_with_the_reason(env: Env, path: str, accept: str, reason: str) -> None:
    answer = env.get(path.format(instance=env.instance("rtdose.dcm")), accept=accept)
    assert answer.status_code == 406, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    assert reason in answer.text, answer.text


# --------------------------------------------------------------------------- the viewer itself


def test_the_viewer_draws_a_jpeg_multi_frame_instance_from_frames_sent_as_stored(env: Env, tmp_path: Path) -> None:
    """OHIF decodes the JPEG frames itself: the server sends them as stored (no server-side decode)."""
    from tests.integration.browser_support import BrowserError, Chromium

    assert ohif_dist(env.settings).is_dir(), "the stack fixture's stack up installs the viewer"
    study = env.multi["examples_ybr_color.dcm"][0]
    with Chromium(tmp_path / "browser") as browser:
        browser.goto(viewer_url(env.settings, study) + f"&token={env.keys.token(scope='dicomweb.read')}")

        try:
            browser.wait_for("the ultrasound frame in a viewport", browser.rendered_viewport, timeout=120)
        except BrowserError:
            browser.screenshot().save(tmp_path / "page.png")  # kept by pytest, to look at
            print([(a.status, a.url[-120:]) for a in browser.responses if env.url in a.url][-40:])
            raise
        frames = [a for a in browser.responses if "/frames/" in a.url and a.url.startswith(env.url)]
        assert frames and all(a.status == 200 for a in frames), frames
        assert not browser.answers_at_least(400), browser.answers_at_least(400)
