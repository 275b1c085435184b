"""The C-STORE receiver against real clients (dcmtk's storescu, pynetdicom) and the real broker."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE

from dicomflow.corpus import make_corpus
from dicomflow.ingest.exceptions import CANNOT_UNDERSTAND, OUT_OF_RESOURCES
from dicomflow.kafka.admin import create_topics
from dicomflow.models import series_key
from dicomflow.receiver.workers import Dispatcher
from dicomflow.settings import KafkaSettings, Settings
from tests.integration.ingest_support import (
    Sample,
    build_sample_corpus,
    free_port,
    make_topics,
    read_audit,
    read_dataset,
    read_store_events,
    running_receiver,
    send_corpus_with_storescu,
    stored_files,
    storescu,
    with_ingest,
    with_receiver,
)
from tests.integration.nagle_support import NAGLE_MARGIN_S, compare_senders

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    """Every receiver test runs against both network engines."""
    return str(request.param)


@pytest.fixture
def scp_settings(settings: Settings, engine: str) -> Settings:
    s = with_receiver(settings, engine=engine)
    make_topics(s)
    return s


@pytest.fixture(scope="module")
def sample_corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    corpus = build_sample_corpus(tmp_path_factory.mktemp("samples"))
    assert len(corpus) >= 100
    return corpus


def instance(sop_uid: str | None = None, *, study: str = "1.2.826.0.1.3680043.8.498.77",
             series: str = "1.2.826.0.1.3680043.8.498.77.1", **attrs: object) -> Dataset:
    """A small CT instance encoded explicit VR little endian."""
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyDate = "20240305"
    ds.PatientID = "PAT-1"
    ds.AccessionNumber = "ACC-1"
    ds.Modality = "CT"
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def send(port: int, datasets: Sequence[Dataset], *, calling: str = "PYNETDICOM") -> list[Dataset]:
    """Send with pynetdicom, one association; return each C-STORE response status."""
    ae = AE(ae_title=calling)
    contexts = {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
    for sop_class, syntax in sorted(contexts):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
    assert assoc.is_established, "association not established"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deliberately invalid UIDs make pydicom warn
            return [assoc.send_c_store(ds) for ds in datasets]
    finally:
        assoc.release()


def check_stored_one_to_one(settings: Settings, expected: dict[str, Sample | None]) -> None:
    """Files on disk and events on storage_queue and log_queue match ``expected`` SOP UIDs one to one."""
    root = settings.storage.root.resolve()
    files = stored_files(root)
    by_sop = {f.stem: f for f in files}
    assert len(files) == len(by_sop) == len(expected)
    assert set(by_sop) == set(expected)

    main = read_store_events(settings, settings.topics.main)
    log = read_store_events(settings, settings.topics.log)
    assert Counter(e.sop_uid for _, e in main) == Counter({sop: 1 for sop in expected})
    assert sorted(e.trace_id for _, e in log) == sorted(e.trace_id for _, e in main)
    for record, event in log:
        assert record.key == event.trace_id.encode()
    for record, event in main:
        assert record.key == series_key(event.tenant_id, event.patient_id, event.study_uid, event.series_uid).encode()
        path = Path(event.file_path)
        assert path == by_sop[event.sop_uid]
        assert path.relative_to(root).parts == (
            event.tenant_id, event.study_date.strftime("%Y%m%d"), event.study_uid, event.series_uid, f"{event.sop_uid}.dcm"
        )
        assert path.stat().st_size == event.file_size
        stored = read_dataset(path)
        assert stored.file_meta.TransferSyntaxUID == event.transfer_syntax_uid
        assert stored.SOPInstanceUID == event.sop_uid
        assert stored.StudyInstanceUID == event.study_uid and stored.SeriesInstanceUID == event.series_uid
        assert event.transfer_status == "NoNeedTransfer" and event.target_ts == event.transfer_syntax_uid
        sample = expected[event.sop_uid]
        if sample is not None:
            assert (event.study_uid, event.series_uid) == (sample.study_uid, sample.series_uid)
            assert stored.file_meta.MediaStorageSOPClassUID == sample.sop_class_uid


def test_storescu_sends_the_sample_corpus(scp_settings: Settings, sample_corpus: list[Sample]) -> None:
    with running_receiver(scp_settings):
        runs = send_corpus_with_storescu(scp_settings.receiver.port, sample_corpus)
    for run in runs:
        assert run.returncode == 0, run.stderr
        assert "E:" not in run.stderr, run.stderr
    check_stored_one_to_one(scp_settings, {s.sop_uid: s for s in sample_corpus})
    # compressed instances are kept in their own syntax
    main = {e.sop_uid: e for _, e in read_store_events(scp_settings, scp_settings.topics.main)}
    for sample in sample_corpus:
        if sample.transfer_syntax_uid not in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"):
            assert main[sample.sop_uid].transfer_syntax_uid == sample.transfer_syntax_uid, sample.path.name
    # the audit trail: application start and stop, and every instance counted in a 110104 event per study
    audit = read_audit(scp_settings)
    activity = [a.event_type[0].code for a in audit if a.event_id.code == "110100"]
    assert activity == ["110120", "110121"]
    transferred = [a for a in audit if a.event_id.code == "110104"]
    assert all(a.event_outcome == 0 for a in transferred)
    assert sum(int(a.participant_objects[0].details["instance_count"]) for a in transferred) == len(sample_corpus)
    per_association_study = Counter((a.participant_objects[0].object_id, a.event_date_time) for a in transferred)
    assert max(per_association_study.values()) == 1
    assert {a.participant_objects[0].object_id for a in transferred} == {s.study_uid for s in sample_corpus}
    assert all(a.active_participants[0].alternative_user_id == "AETITLES=STORESCU" for a in transferred)


def test_pynetdicom_sends_the_sample_corpus(scp_settings: Settings, sample_corpus: list[Sample]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = [pydicom.dcmread(s.path) for s in sample_corpus]
    with running_receiver(scp_settings):
        statuses = send(scp_settings.receiver.port, datasets)
    assert [s.Status for s in statuses] == [0] * len(datasets)
    check_stored_one_to_one(scp_settings, {s.sop_uid: s for s in sample_corpus})


@pytest.mark.parametrize(
    ("attrs", "status"),
    [
        ({"SOPInstanceUID": "../../x"}, CANNOT_UNDERSTAND),
        ({"SOPInstanceUID": "1.2.3/../.."}, CANNOT_UNDERSTAND),
        ({"StudyInstanceUID": "../../../../tmp"}, CANNOT_UNDERSTAND),
        ({"SeriesInstanceUID": "1.2/../../.."}, CANNOT_UNDERSTAND),
        ({"SeriesInstanceUID": ""}, 0xA900),
    ],
)
def test_a_path_traversal_uid_is_refused_and_nothing_is_written(
    scp_settings: Settings, tmp_path: Path, attrs: dict[str, str], status: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bad = instance(**attrs)
    good = instance()
    with running_receiver(scp_settings):
        statuses = send(scp_settings.receiver.port, [bad, good])
    assert statuses[0].Status == status
    assert statuses[0].ErrorComment
    assert statuses[1].Status == 0  # the association goes on after a refusal
    everything = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert [p.name for p in everything] == [f"{good.SOPInstanceUID}.dcm"]
    root = scp_settings.storage.root.resolve()
    naive = os.path.normpath(root / "default" / "20240305" / str(bad.StudyInstanceUID) / str(bad.SeriesInstanceUID)
                             / f"{bad.SOPInstanceUID}.dcm")
    assert not Path(naive).exists()
    assert [e.sop_uid for _, e in read_store_events(scp_settings, scp_settings.topics.main)] == [good.SOPInstanceUID]
    refused = [a for a in read_audit(scp_settings) if a.event_id.code == "110104" and a.event_outcome != 0]
    assert len(refused) == 1 and refused[0].event_outcome == 4
    assert "1 instance(s) refused" in (refused[0].event_outcome_description or "")


def test_kafka_down_answers_a_failure_not_success(settings: Settings, engine: str) -> None:
    dead = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=1500, request_timeout_ms=1000)
    down = with_receiver(dataclasses.replace(settings, kafka=dead), publish_timeout_s=3.0, engine=engine)
    started = time.monotonic()
    with running_receiver(down):
        statuses = send(down.receiver.port, [instance()])
    assert statuses[0].Status == OUT_OF_RESOURCES
    assert "Kafka" in statuses[0].ErrorComment
    assert time.monotonic() - started < 30


def test_four_clients_at_once_every_instance_stored_once(scp_settings: Settings, tmp_path: Path) -> None:
    folders = []
    expected: dict[str, Sample | None] = {}
    for client in range(4):
        folder = tmp_path / f"client{client}"
        corpus = make_corpus(folder, 60, studies=2, series_per_study=2)
        expected.update({e.sop_uid: None for e in corpus.events})
        folders.append(folder)
    with running_receiver(scp_settings):
        runs = run_in_parallel(scp_settings.receiver.port, folders)
    for run in runs:
        assert run.returncode == 0, run.stderr
    check_stored_one_to_one(scp_settings, expected)


def run_in_parallel(port: int, folders: list[Path]) -> list[subprocess.CompletedProcess[str]]:
    results: list[subprocess.CompletedProcess[str]] = []
    lock = threading.Lock()

    def one(folder: Path) -> None:
        run = storescu(port, [folder], "+sd", "+r")
        with lock:
            results.append(run)

    threads = [threading.Thread(target=one, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.fixture
def dispatcher(scp_settings: Settings) -> Iterator[Dispatcher]:
    d = Dispatcher(scp_settings, 2, log_level="WARNING")
    d.start_workers()
    thread = threading.Thread(target=d.serve_forever, daemon=True)
    thread.start()
    try:
        yield d
    finally:
        d.stop()
        thread.join(10)
        d.close()


def test_two_processes_behind_one_port_share_four_clients(
    scp_settings: Settings, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    folders = []
    expected: dict[str, Sample | None] = {}
    for client in range(4):
        corpus = make_corpus(tmp_path / f"c{client}", 40, studies=1, series_per_study=2)
        expected.update({e.sop_uid: None for e in corpus.events})
        folders.append(tmp_path / f"c{client}")
    runs = run_in_parallel(dispatcher.address[1], folders)
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert dispatcher.workers_alive() == dispatcher.workers_ready() == 2
    check_stored_one_to_one(scp_settings, expected)
    nodes = {e.worker_node_id for _, e in read_store_events(scp_settings, scp_settings.topics.main)}
    assert nodes == {f"{scp_settings.worker_node_id}-0", f"{scp_settings.worker_node_id}-1"}


def test_a_resent_instance_replaces_when_configured_and_gets_a_new_event(scp_settings: Settings) -> None:
    scp_settings = dataclasses.replace(scp_settings, ingest=dataclasses.replace(scp_settings.ingest, duplicates="replace"))
    first = instance("1.2.826.0.1.3680043.8.498.77.1.1", PatientName="First^Version")
    again = instance("1.2.826.0.1.3680043.8.498.77.1.1", PatientName="Second^Version")
    with running_receiver(scp_settings):
        statuses = send(scp_settings.receiver.port, [first]) + send(scp_settings.receiver.port, [again])
    assert [s.Status for s in statuses] == [0, 0]
    files = stored_files(scp_settings.storage.root)
    assert len(files) == 1
    assert read_dataset(files[0]).PatientName == "Second^Version"
    events = [e for _, e in read_store_events(scp_settings, scp_settings.topics.main)]
    assert [e.sop_uid for e in events] == [first.SOPInstanceUID] * 2
    assert events[0].trace_id != events[1].trace_id
    assert events[0].file_path == events[1].file_path == str(files[0])


def test_tenant_from_the_private_tag_then_the_calling_ae_then_the_default(settings: Settings, engine: str) -> None:
    s = with_ingest(with_receiver(settings, engine=engine), ae_tenants={"CT_WARD": "radiology"})
    make_topics(s)
    tagged = instance()
    tagged.add_new(0x12110010, "LO", "DICOMFLOW")
    tagged.add_new(0x12111217, "LO", "oncology")
    plain, from_default = instance(), instance()
    with running_receiver(s):
        assert [x.Status for x in send(s.receiver.port, [tagged, plain], calling="CT_WARD")] == [0, 0]
        assert send(s.receiver.port, [from_default], calling="OTHER")[0].Status == 0
    tenants = {e.sop_uid: e.tenant_id for _, e in read_store_events(s, s.topics.main)}
    assert tenants == {tagged.SOPInstanceUID: "oncology", plain.SOPInstanceUID: "radiology",
                       from_default.SOPInstanceUID: s.storage.default_tenant}
    root = s.storage.root.resolve()
    assert {p.relative_to(root).parts[0] for p in stored_files(root)} == {"oncology", "radiology", s.storage.default_tenant}


def test_an_unsupported_transfer_syntax_needs_transfer(
    settings: Settings, engine: str, pydicom_test_files: list[Path]
) -> None:
    supported = tuple(ts for ts in settings.ingest.supported_transfer_syntaxes if ts != JPEGBaseline8Bit)
    s = with_ingest(with_receiver(settings, engine=engine), supported_transfer_syntaxes=supported)
    make_topics(s)
    jpeg = next(p for p in pydicom_test_files if p.name == "SC_rgb_jpeg_dcmtk.dcm")
    with running_receiver(s):
        run = storescu(s.receiver.port, [jpeg], "-xy")
    assert run.returncode == 0, run.stderr
    [(_, event)] = read_store_events(s, s.topics.main)
    assert (event.transfer_syntax_uid, event.transfer_status, event.target_ts) == (
        JPEGBaseline8Bit, "NeedTransfer", ExplicitVRLittleEndian)


def _echoscu(port: int, calling: str) -> subprocess.CompletedProcess[str]:
    """dcmtk's echoscu from ``calling`` to the receiver (its output names a rejection's result and reason)."""
    return subprocess.run(["/usr/bin/echoscu", "-aet", calling, "-aec", "DICOMFLOW", "127.0.0.1", str(port)],
                          capture_output=True, text=True, timeout=60)


def test_a_calling_ae_not_allowed_is_rejected_and_audited(settings: Settings, engine: str) -> None:
    s = with_receiver(settings, allowed_calling_aes=("GOOD_AE",), engine=engine)
    make_topics(s)
    with running_receiver(s):
        # dcmtk's echoscu, not pynetdicom: pynetdicom's requestor may report an abort
        # instead of the rejection when the A-ASSOCIATE-RJ and the close come quickly.
        run = _echoscu(s.receiver.port, "EVIL_AE")
        assert run.returncode != 0
        said = run.stdout + run.stderr
        assert "Association Rejected" in said and "Calling AE Title Not Recognized" in said, said
        assert send(s.receiver.port, [instance()], calling="GOOD_AE")[0].Status == 0
    rejected = [a for a in read_audit(s) if a.event_id.code == "110114"]
    assert len(rejected) == 1
    assert rejected[0].event_outcome == 4
    assert rejected[0].active_participants[0].alternative_user_id == "AETITLES=EVIL_AE"
    assert "allowed_calling_aes" in (rejected[0].event_outcome_description or "")


def test_a_sender_that_leaves_nagle_on_is_not_stalled(scp_settings: Settings, tmp_path: Path) -> None:
    """Issue 23: without TCP_NODELAY in storescu's environment each C-STORE waited ~40 ms for our delayed ACK."""
    with running_receiver(scp_settings):
        run = compare_senders(scp_settings, scp_settings.receiver.port, tmp_path / "nagle")
    assert run.stall_s < NAGLE_MARGIN_S, f"Nagle stalls? {run}"
    check_stored_one_to_one(scp_settings, dict.fromkeys(run.sent))


def test_a_sender_that_leaves_nagle_on_is_not_stalled_by_a_worker_process(
    scp_settings: Settings, dispatcher: Dispatcher, tmp_path: Path
) -> None:
    """The same through the dispatcher: the connection is served (and read) in a worker process."""
    run = compare_senders(scp_settings, dispatcher.address[1], tmp_path / "nagle")
    assert run.stall_s < NAGLE_MARGIN_S, f"Nagle stalls? {run}"
    check_stored_one_to_one(scp_settings, dict.fromkeys(run.sent))


def test_the_scp_command_serves_until_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    create_topics(settings.kafka, settings.topics)
    env = {
        **os.environ,
        "DICOMFLOW_KAFKA_BROKERS": settings.kafka.brokers,
        "DICOMFLOW_TOPICS_MAIN": settings.topics.main,
        "DICOMFLOW_TOPICS_LOG": settings.topics.log,
        "DICOMFLOW_TOPICS_AUDIT": settings.topics.audit,
        "DICOMFLOW_STORAGE_ROOT": str(settings.storage.root),
    }
    env.pop("DICOMFLOW_CONFIG", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "dicomflow.cli", "scp", "--port", str(port), "--processes", "2"],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port, process)
        statuses = send(port, [instance()])
        assert statuses[0].Status == 0
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert len(stored_files(settings.storage.root)) == 1
    activity = [a.event_type[0].code for a in read_audit(settings) if a.event_id.code == "110100"]
    assert activity == ["110120", "110121"]


def wait_for_port(port: int, process: subprocess.Popen[str], timeout_s: float = 30.0) -> None:
    """Wait until something accepts connections on ``port`` (the command has started)."""
    deadline = time.monotonic() + timeout_s
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, "the command exited early"
        assert time.monotonic() < deadline, f"nothing listens on port {port}"
        time.sleep(0.2)


def test_c_echo_and_fragmented_data_sets(scp_settings: Settings, sample_corpus: list[Sample]) -> None:
    uncompressed = [s for s in sample_corpus if s.transfer_syntax_uid == "1.2.840.10008.1.2.1"][:20]
    with running_receiver(scp_settings):
        ae = AE(ae_title="ECHOER")
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", scp_settings.receiver.port, ae_title="DICOMFLOW")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        # 4 kB PDUs: every data set arrives in many P-DATA fragments
        run = storescu(scp_settings.receiver.port, [s.path for s in uncompressed], "--max-send-pdu", "4096")
    assert run.returncode == 0, run.stderr
    check_stored_one_to_one(scp_settings, {s.sop_uid: s for s in uncompressed})
    for sample in uncompressed:  # the fragments were put back together in order
        stored = next(scp_settings.storage.root.resolve().rglob(f"{sample.sop_uid}.dcm"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some samples hold invalid values on purpose
            assert content(stored) == content(sample.path), sample.path.name


def content(path: Path) -> dict[int, object]:
    """Every element value of a file's data set, except group lengths and trailing padding."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
    return {int(e.tag): e.value for e in ds if e.tag.element != 0 and e.tag != 0xFFFCFFFC}


def test_other_services_are_not_accepted(scp_settings: Settings) -> None:
    with running_receiver(scp_settings):
        ae = AE(ae_title="FINDER")
        ae.add_requested_context("1.2.840.10008.5.1.4.31")  # Modality Worklist FIND (C-FIND of Q/R: docs/qr.md)
        ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", scp_settings.receiver.port, ae_title="DICOMFLOW")
        assert assoc.is_established
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [CT_IMAGE]
        assert [cx.abstract_syntax for cx in assoc.rejected_contexts] == ["1.2.840.10008.5.1.4.31"]
        assoc.release()


def test_the_association_limit_rejects_one_too_many(settings: Settings, engine: str) -> None:
    s = with_receiver(settings, max_associations=1, engine=engine)
    make_topics(s)
    with running_receiver(s):
        ae = AE(ae_title="FIRST")
        ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
        first = ae.associate("127.0.0.1", s.receiver.port, ae_title="DICOMFLOW")
        assert first.is_established
        second = _echoscu(s.receiver.port, "SECOND")  # dcmtk: see the calling-AE test
        assert second.returncode != 0
        said = second.stdout + second.stderr
        assert "Association Rejected" in said and "Rejected Transient" in said and "Local Limit Exceeded" in said, said
        assert first.send_c_store(instance()).Status == 0
        first.release()
    assert any(a.event_id.code == "110114" and "limit" in (a.event_outcome_description or "") for a in read_audit(s))


def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send bytes on a fresh connection; return what came back before the receiver closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)  # then hang up our side
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def test_the_native_engine_aborts_protocol_violations_and_keeps_serving(settings: Settings) -> None:
    from tests.unit.receiver.test_upperlayer import pynetdicom_rq

    s = with_receiver(settings, engine="native")
    make_topics(s)
    port = s.receiver.port
    with running_receiver(s):
        assert raw_exchange(port, b"GET / HTTP/1.1\r\n\r\n")[:1] == b"\x07"  # A-ABORT
        assert raw_exchange(port, b"") == b""  # connect and hang up: nothing to answer
        request = pynetdicom_rq((CT_IMAGE, [ExplicitVRLittleEndian]))
        # P-DATA on a presentation context that was never proposed
        reply = raw_exchange(port, request + b"\x04\x00\x00\x00\x00\x0a\x00\x00\x00\x06\x63\x03abcd")
        assert reply[:1] == b"\x02" and reply[-10:] == b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x02"
        # a truncated PDU (the length promises more than arrives before the peer hangs up)
        reply = raw_exchange(port, request + b"\x04\x00\x00\x00\x10\x00abc")
        assert reply[:1] == b"\x02" and reply[-10:-9] == b"\x07"
        assert send(port, [instance()])[0].Status == 0  # still serving
