"""C-MOVE and C-GET answered by ``dicomflow scp`` (both engines: every test runs on each) from a real index and storage.

The corpus goes the real way: files and store events (two studies of the
default tenant), one RLE-compressed instance sent by C-STORE, the consumer
indexes them into PostgreSQL; then dcmtk's movescu / getscu and pynetdicom's
SCU retrieve them into dcmtk's storescp or a folder.
"""

from __future__ import annotations

import dataclasses
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pydicom
import pytest
from psycopg import sql
from pydicom.dataset import Dataset
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.pipeline.service import ConsumerService
from dicomflow.receiver.scp import Receiver
from dicomflow.settings import Settings
from dicomflow.settings.qr import QrSettings
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from tests.integration.ingest_support import read_audit, with_ingest, with_receiver
from tests.integration.qr.retrieve_support import dataset_bytes, dcmtk_env, received, storescp

RLE_SAMPLE = Path(pydicom.__file__).parent / "data" / "test_files" / "SC_rgb_rle.dcm"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"
OTHER_AE = "OTHERAE"
OTHER_TENANT = "other-hospital"


@dataclass
class Env:
    engine: str
    settings: Settings
    port: int
    dest_port: int
    work: Path
    studies: dict[str, dict[str, Path]]  # study UID -> {SOP Instance UID: stored file}
    rle_study: str
    rle_sop: str

    def folder(self) -> Path:
        path = self.work / uuid.uuid4().hex[:8]
        path.mkdir()
        return path


def _send_rle(port: int) -> tuple[str, str]:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(SecondaryCaptureImageStorage, [RLE_LOSSLESS])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(RLE_SAMPLE)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    assert assoc.is_established
    status = assoc.send_c_store(ds)
    assoc.release()
    assert status.Status == 0
    return str(ds.StudyInstanceUID), str(ds.SOPInstanceUID)


@pytest.fixture(scope="module", params=["native", "pynetdicom"])
def env(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Env]:
    engine = str(request.param)
    work = tmp_path_factory.mktemp(f"qr-{engine}")
    suffix = uuid.uuid4().hex[:10]
    base = stack.settings
    topics = dataclasses.replace(
        base.topics, main=f"qr_{suffix}", log=f"qr_log_{suffix}", dicom_state=f"qr_state_{suffix}",
        dicom_image=f"qr_image_{suffix}", audit=f"qr_audit_{suffix}", dlq=f"qr_{suffix}.dlq",
        consumer_group_id=f"qr_{suffix}", partitions=2,
    )
    dbname = f"dicomflow_qr_{suffix}"
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                 sql.Identifier(base.database.user)))
    root = work / "storage"
    root.mkdir()
    dest_port = free_port()
    # NOWHERE: configured, but nothing listens there
    qr = QrSettings(enabled=True, destinations={"STORESCP": f"127.0.0.1:{dest_port}", "NOWHERE": f"127.0.0.1:{free_port()}"},
                    move_connect_timeout_s=3.0)
    settings = dataclasses.replace(
        base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname),
        consumer=dataclasses.replace(base.consumer, batch_max_messages=200, batch_max_ms=200, parse_workers=1),
        storage=dataclasses.replace(base.storage, root=root), worker_node_id="qr-test", qr=qr,
    )
    settings = with_receiver(with_ingest(settings, ae_tenants={OTHER_AE: OTHER_TENANT}), engine=engine)
    create_topics(settings.kafka, topics)
    with PgStore(settings.database) as store:
        store.migrate()
    corpus = make_corpus(root, 24, studies=2, series_per_study=2)
    with Publisher(settings.kafka, topics) as publisher:
        publisher.send_store_events(corpus.events).raise_for_failures()
    receiver = Receiver(settings)
    receiver.start()
    try:
        rle_study, rle_sop = _send_rle(settings.receiver.port)
        ConsumerService(settings, until_idle_s=3.0).run()
        studies: dict[str, dict[str, Path]] = {}
        for event in corpus.events:
            path = Path(event.file_path)
            studies.setdefault(event.study_uid, {})[event.sop_uid] = path if path.is_absolute() else root / path
        yield Env(engine, settings, settings.receiver.port, dest_port, work, studies, rle_study, rle_sop)
    finally:
        receiver.stop()
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def _study(env: Env) -> tuple[str, dict[str, Path]]:
    return sorted(env.studies.items())[0]


def _assert_byte_equal(got: dict[str, Path], want: dict[str, Path]) -> None:
    assert set(got) == set(want)
    for uid, path in want.items():
        assert dataset_bytes(got[uid]) == dataset_bytes(path), uid


def _movescu(env: Env, *keys: str, destination: str = "STORESCP", calling: str = "MOVESCU") -> subprocess.CompletedProcess[str]:
    args = ["/usr/bin/movescu", "-S", "-aet", calling, "-aec", "DICOMFLOW", "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return subprocess.run([*args, "127.0.0.1", str(env.port)], env=dcmtk_env(), capture_output=True, text=True,
                          timeout=120)


def _getscu(env: Env, folder: Path, *keys: str, calling: str = "GETSCU",
            model: str = "-S") -> subprocess.CompletedProcess[str]:
    args = ["/usr/bin/getscu", model, "+B", "-aet", calling, "-aec", "DICOMFLOW", "-od", str(folder)]
    for key in keys:
        args += ["-k", key]
    return subprocess.run([*args, "127.0.0.1", str(env.port)], env=dcmtk_env(), capture_output=True, text=True,
                          timeout=120)


def test_movescu_to_storescp_sends_every_instance_byte_equal(env: Env) -> None:
    study, files = _study(env)
    with storescp(env.folder(), env.dest_port, "+B") as folder:  # +B: written exactly as received
        run = _movescu(env, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
        assert run.returncode == 0, run.stderr[-2000:]
    _assert_byte_equal(received(folder), files)


def test_getscu_into_a_folder_sends_every_instance_byte_equal(env: Env) -> None:
    study, files = _study(env)
    folder = env.folder()
    run = _getscu(env, folder, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}")
    assert run.returncode == 0, run.stderr[-2000:]
    _assert_byte_equal(received(folder), files)


def test_patient_root_get_at_patient_and_study_level(env: Env) -> None:
    study, files = _study(env)
    patient = str(pydicom.dcmread(next(iter(files.values())), stop_before_pixels=True).PatientID)
    folder = env.folder()
    run = _getscu(env, folder, "QueryRetrieveLevel=STUDY", f"PatientID={patient}", f"StudyInstanceUID={study}",
                  model="-P")
    assert run.returncode == 0, run.stderr[-2000:]
    _assert_byte_equal(received(folder), files)
    folder = env.folder()
    run = _getscu(env, folder, "QueryRetrieveLevel=PATIENT", f"PatientID={patient}", model="-P")
    assert run.returncode == 0, run.stderr[-2000:]
    patients = {uid for s in env.studies.values() for uid, path in s.items()
                if path.exists() and str(pydicom.dcmread(path, stop_before_pixels=True).PatientID) == patient}
    assert set(received(folder)) == patients


def test_series_and_image_level_retrieves_send_what_they_name(env: Env) -> None:
    study, files = _study(env)
    headers = {uid: pydicom.dcmread(path, stop_before_pixels=True) for uid, path in files.items()}
    series = sorted({str(h.SeriesInstanceUID) for h in headers.values()})[0]
    in_series = {uid for uid, h in headers.items() if str(h.SeriesInstanceUID) == series}
    _statuses, got = _pynetdicom_get(env, _identifier("SERIES", StudyInstanceUID=study, SeriesInstanceUID=series))
    assert set(got) == in_series
    sops = sorted(in_series)[:2]
    _statuses, got = _pynetdicom_get(env, _identifier("IMAGE", StudyInstanceUID=study, SeriesInstanceUID=series,
                                                      SOPInstanceUID=sops))
    assert set(got) == set(sops)
    statuses, got = _pynetdicom_get(env, _identifier("IMAGE", StudyInstanceUID=study))  # no SOPInstanceUID
    assert statuses[-1] == 0xA900 and got == {}


def _pynetdicom_get(env: Env, identifier: Dataset, *, calling: str = "PYGET",
                    cancel_after: int | None = None) -> tuple[list[int], dict[str, Dataset]]:
    got: dict[str, Dataset] = {}
    state: dict[str, object] = {}

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        got[str(ds.SOPInstanceUID)] = ds
        if cancel_after is not None and len(got) == cancel_after:
            event.assoc.send_c_cancel(1, state["cx"])  # type: ignore[arg-type]
        return 0

    ae = AE(ae_title=calling)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    storage = StoragePresentationContexts[:120]
    roles = []
    for cx in storage:
        ae.add_requested_context(cx.abstract_syntax, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        roles.append(build_role(cx.abstract_syntax, scp_role=True))
    assoc = ae.associate("127.0.0.1", env.port, ae_title="DICOMFLOW", ext_neg=roles,
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    state["cx"] = next(cx.context_id for cx in assoc.accepted_contexts
                       if cx.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
    statuses = [int(status.Status) for status, _ in assoc.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet,
                                                                      msg_id=1) if status]
    assoc.release()
    return statuses, got


def _identifier(level: str = "STUDY", **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def test_pynetdicom_get_and_move(env: Env) -> None:
    study, files = _study(env)
    statuses, got = _pynetdicom_get(env, _identifier(StudyInstanceUID=study))
    assert statuses[-1] == 0 and set(got) == set(files)
    assert 0xFF00 in statuses  # pending responses with the counts
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with storescp(env.folder(), env.dest_port, "+B") as folder:
        assoc = ae.associate("127.0.0.1", env.port, ae_title="DICOMFLOW")
        responses = [r for r, _ in assoc.send_c_move(_identifier(StudyInstanceUID=study), "STORESCP",
                                                     StudyRootQueryRetrieveInformationModelMove) if r]
        assoc.release()
    final = responses[-1]
    assert final.Status == 0 and final.NumberOfCompletedSuboperations == len(files)
    pending = [r for r in responses if r.Status == 0xFF00]
    assert pending and pending[0].NumberOfRemainingSuboperations == len(files) - 1
    _assert_byte_equal(received(folder), files)


def test_a_calling_ae_of_another_tenant_retrieves_nothing(env: Env) -> None:
    study, _files = _study(env)
    statuses, got = _pynetdicom_get(env, _identifier(StudyInstanceUID=study), calling=OTHER_AE)
    assert statuses == [0] and got == {}
    folder = env.folder()
    run = _getscu(env, folder, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}", calling=OTHER_AE)
    assert run.returncode == 0 and received(folder) == {}


def test_a_retrieve_cancelled_halfway_stops(env: Env) -> None:
    study, files = _study(env)
    statuses, got = _pynetdicom_get(env, _identifier(StudyInstanceUID=study), cancel_after=3)
    assert statuses[-1] == 0xFE00
    assert 3 <= len(got) < len(files)


def test_an_unknown_destination_answers_a801(env: Env) -> None:
    study, _files = _study(env)
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", env.port, ae_title="DICOMFLOW")
    # a configured destination where nothing listens answers 0xA801 too (pynetdicom leaks a socket then: native only)
    for destination in ("NOT-LISTED", "NOWHERE") if env.engine == "native" else ("NOT-LISTED",):
        responses = [r for r, _ in assoc.send_c_move(_identifier(StudyInstanceUID=study), destination,
                                                     StudyRootQueryRetrieveInformationModelMove) if r]
        assert responses[-1].Status == 0xA801, destination
    assoc.release()
    run = _movescu(env, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}", destination="NOT-LISTED")
    assert run.returncode != 0 and "movedestinationunknown" in run.stderr.lower()


def test_a_destination_refusing_compressed_syntaxes_gets_uncompressed_copies(env: Env) -> None:
    with storescp(env.folder(), env.dest_port) as folder:  # storescp accepts uncompressed syntaxes only
        run = _movescu(env, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={env.rle_study}")
        assert run.returncode == 0, run.stderr[-2000:]
    got = received(folder)
    assert set(got) == {env.rle_sop}
    ts, _data = dataset_bytes(got[env.rle_sop])
    assert ts in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sent = pydicom.dcmread(got[env.rle_sop])
        original = pydicom.dcmread(RLE_SAMPLE)
    assert (sent.pixel_array == original.pixel_array).all()
    with storescp(env.folder(), env.dest_port, "+xa") as folder:  # accepts every syntax: gets the stored RLE
        run = _movescu(env, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={env.rle_study}")
        assert run.returncode == 0, run.stderr[-2000:]
    assert dataset_bytes(received(folder)[env.rle_sop])[0] == RLE_LOSSLESS


def test_retrieves_are_audited(env: Env) -> None:
    study, files = _study(env)
    folder = env.folder()
    run = _getscu(env, folder, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}", calling="AUDITGET")
    assert run.returncode == 0
    deadline = time.monotonic() + 20
    while True:
        events = [e for e in read_audit(env.settings)
                  if any(p.alternative_user_id == "AETITLES=AUDITGET" for p in e.active_participants)]
        codes = {(e.event_id.code, e.event_action) for e in events}
        if {("110102", "E"), ("110104", "R")} <= codes or time.monotonic() > deadline:
            break
    assert {("110102", "E"), ("110104", "R")} <= codes
    transferred = next(e for e in events if e.event_id.code == "110104")
    assert transferred.event_outcome == 0
    assert transferred.participant_objects[0].object_id == study
    assert transferred.participant_objects[0].details["instance_count"] == str(len(files))


def test_without_qr_enabled_the_retrieve_contexts_are_refused(env: Env) -> None:
    plain = with_receiver(dataclasses.replace(env.settings, qr=QrSettings()), engine=env.engine)
    receiver = Receiver(plain)
    receiver.start(announce=False)
    try:
        ae = AE(ae_title="PYMOVE")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        assoc = ae.associate("127.0.0.1", plain.receiver.port, ae_title="DICOMFLOW")
        assert not assoc.is_established or not assoc.accepted_contexts
        if assoc.is_established:
            assoc.release()
    finally:
        receiver.stop(announce=False)


def test_a_failed_sub_operation_is_named_in_the_final_status_and_the_audit(env: Env) -> None:
    study, files = sorted(env.studies.items())[1]  # the other study: no other test uses it
    lost = sorted(files)[0]
    files[lost].unlink()  # the index still names it: its sub-operation fails
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with storescp(env.folder(), env.dest_port) as folder:
        assoc = ae.associate("127.0.0.1", env.port, ae_title="DICOMFLOW")
        responses = [(r, i) for r, i in assoc.send_c_move(_identifier(StudyInstanceUID=study), "STORESCP",
                                                          StudyRootQueryRetrieveInformationModelMove) if r]
        assoc.release()
    final, identifier = responses[-1]
    assert final.Status == 0xB000 and final.NumberOfFailedSuboperations == 1
    assert final.NumberOfCompletedSuboperations == len(files) - 1
    assert identifier is not None and identifier.FailedSOPInstanceUIDList == lost  # one value
    assert set(received(folder)) == set(files) - {lost}
    deadline = time.monotonic() + 20
    while True:
        failed = [e for e in read_audit(env.settings) if e.event_id.code == "110104" and e.event_outcome != 0
                  and e.participant_objects[0].object_id == study]
        if failed or time.monotonic() > deadline:
            break
    assert failed and lost in failed[0].participant_objects[0].details["failed_sop_instance_uids"]


def test_a_move_with_a_bad_identifier_answers_a900(env: Env) -> None:
    study, _files = _study(env)
    ae = AE(ae_title="PYMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    with storescp(env.folder(), env.dest_port) as folder:
        assoc = ae.associate("127.0.0.1", env.port, ae_title="DICOMFLOW")
        responses = [r for r, _ in assoc.send_c_move(_identifier("IMAGE", StudyInstanceUID=study), "STORESCP",
                                                     StudyRootQueryRetrieveInformationModelMove) if r]
        assoc.release()
    assert responses[-1].Status == 0xA900 and "SOPInstanceUID" in str(responses[-1].get("ErrorComment", ""))
    assert received(folder) == {}
