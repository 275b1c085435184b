"""The store decision: which status for which failure, and what is on disk and sent when.

The publisher here is a stand-in that records the events it is given and
answers as told (the decision logic is under test; the real broker is
exercised in tests/integration/receiver/test_scp.py).
"""

from __future__ import annotations

import errno
import threading
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from dicomflow.ingest import storage
from dicomflow.ingest.ingestor import Ingestor, Source
from dicomflow.ingest.service import StoreRequest, StoreService
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure
from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent, DicomStoreMeta
from dicomflow.settings import IngestSettings, StorageSettings

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
#: The association every store of these tests comes in on (each test has a transfer log of its own).
ASSOC = SessionKey("association")


class RecordingPublisher:
    def __init__(self, fail_with: str | None = None) -> None:
        self.fail_with = fail_with
        self.events: list[DicomStoreMeta] = []
        self.audit: list[AuditEvent] = []

    def send_store_event(self, event: DicomStoreMeta, *, timeout_s: float | None = None) -> BatchResult:
        self.events.append(event)
        if self.fail_with:
            return BatchResult(0, [DeliveryFailure(0, "storage_queue", None, self.fail_with)])
        return BatchResult(2)

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        self.audit.extend(events)
        return BatchResult(len(events))


def encoded(**attrs: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.StudyDate = "20240305"
    ds.PatientID = "P1"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid UIDs on purpose
        for key, value in attrs.items():
            setattr(ds, key, value)
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_dataset(fp, ds)
    return fp.getvalue()


def service(tmp_path: Path, publisher: RecordingPublisher, **ingest: object) -> tuple[StoreService, TransferLog]:
    ingestor = Ingestor(StorageSettings(root=tmp_path / "root"), replace(IngestSettings(), **ingest), "node-1")  # type: ignore[arg-type]
    transfers = TransferLog("node-1", lambda events: publisher.audit.extend(events))
    return StoreService(ingestor, cast(Publisher, publisher), transfers, publish_timeout_s=1.0), transfers


def request(dataset: bytes, sop: str | None = "1.2.3.4.5") -> StoreRequest:
    return StoreRequest(dataset, EXPLICIT, CT, sop, Source("MODALITY", "10.0.0.7"))


def test_success_writes_then_publishes_and_audits(tmp_path: Path) -> None:
    publisher = RecordingPublisher()
    svc, transfers = service(tmp_path, publisher)
    transfers.opened(ASSOC, Peer("MODALITY", "10.0.0.7", "DICOMFLOW", "127.0.0.1"))
    outcome = svc.store(ASSOC, request(encoded()))
    assert (outcome.status, outcome.comment) == (0, None)
    [event] = publisher.events
    path = tmp_path / "root" / "default" / "20240305" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert event.file_path == str(path.resolve()) and path.is_file()
    assert (event.source_ae, event.source_ip, event.worker_node_id) == ("MODALITY", "10.0.0.7", "node-1")
    assert event.file_size == path.stat().st_size
    transfers.closed(ASSOC)
    [audit] = publisher.audit
    assert audit.event_id.code == "110104" and audit.participant_objects[0].details["instance_count"] == "1"
    svc.close()


@pytest.mark.parametrize(
    ("attrs", "sop", "status", "words"),
    [
        ({"SOPInstanceUID": "../../x"}, "../../x", 0xC000, "invalid SOP Instance UID"),
        ({"StudyInstanceUID": ""}, "1.2.3.4.5", 0xA900, "Study Instance UID (required)"),
        ({"SeriesInstanceUID": "1.2.03"}, "1.2.3.4.5", 0xC000, "leading"),
    ],
)
def test_refusals_answer_the_status_and_write_nothing(
    tmp_path: Path, attrs: dict[str, str], sop: str, status: int, words: str
) -> None:
    publisher = RecordingPublisher()
    svc, transfers = service(tmp_path, publisher)
    outcome = svc.store(ASSOC, request(encoded(**attrs), sop))
    assert outcome.status == status
    assert outcome.comment is not None and words in outcome.comment and len(outcome.comment) <= 64
    assert publisher.events == []
    assert not any(p.is_file() for p in (tmp_path / "root").rglob("*"))
    transfers.closed(ASSOC)
    assert [a.event_outcome for a in publisher.audit] == [4]
    svc.close()


def test_kafka_refusing_the_event_is_out_of_resources(tmp_path: Path) -> None:
    publisher = RecordingPublisher(fail_with="Local: Message timed out")
    svc, _ = service(tmp_path, publisher)
    outcome = svc.store(ASSOC, request(encoded()))
    assert outcome.status == 0xA700
    assert outcome.comment is not None and "Kafka" in outcome.comment
    svc.close()


class OverlapProbe:
    """Instrumented fsync and publish: each waits (bounded) for the other to have started, recording the order.

    Run one after the other, the first to start would wait in vain and
    record that it ran alone; run overlapped, each sees the other in flight.
    """

    def __init__(self) -> None:
        self.order: list[str] = []
        self._lock = threading.Lock()
        self.sync_started = threading.Event()
        self.publish_started = threading.Event()
        self.folders: list[str] = []

    def note(self, what: str) -> None:
        with self._lock:
            self.order.append(what)

    def fsync_folder(self, folder: Path) -> None:
        self.folders.append(folder.name)
        self.note("fsync started")
        self.sync_started.set()
        self.note("fsync saw the publish in flight" if self.publish_started.wait(2.0) else "fsync ran alone")
        self.note("fsync done")

    def publishing(self, publisher: RecordingPublisher) -> RecordingPublisher:
        probe = self
        send = publisher.send_store_event

        def send_store_event(event: DicomStoreMeta, *, timeout_s: float | None = None) -> BatchResult:
            probe.note("publish started")
            probe.publish_started.set()
            saw = probe.sync_started.wait(2.0)
            probe.note("publish saw the fsync in flight" if saw else "publish ran alone")
            result = send(event, timeout_s=timeout_s)
            probe.note("acknowledged")
            return result

        publisher.send_store_event = send_store_event  # type: ignore[method-assign]
        return publisher


def test_the_folder_sync_overlaps_the_publish_and_its_failure_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publisher = RecordingPublisher()
    svc, _ = service(tmp_path, publisher)
    assert svc.store(ASSOC, request(encoded())).status == 0  # the folders exist from now on

    # 1. the series folder's fsync runs while Kafka's acknowledgement is awaited, and Success waits for both
    probe = OverlapProbe()
    probe.publishing(publisher)
    monkeypatch.setattr(storage, "fsync_folder", probe.fsync_folder)
    # a new instance in the same series (the same one again would be an identical copy: nothing to publish)
    assert svc.store(ASSOC, request(encoded(SOPInstanceUID="1.2.3.4.7"))).status == 0
    assert probe.folders == ["1.2.3.4"]  # the series folder, after the rename
    assert "fsync saw the publish in flight" in probe.order and "publish saw the fsync in flight" in probe.order
    assert "fsync ran alone" not in probe.order and "publish ran alone" not in probe.order
    assert probe.order.index("publish started") < probe.order.index("fsync done")
    assert probe.order.index("fsync started") < probe.order.index("acknowledged")

    # 2. a failed folder sync is a failure even though Kafka acknowledged
    calls: list[str] = []

    def failing_sync(folder: Path) -> None:
        calls.append(folder.name)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(storage, "fsync_folder", failing_sync)
    outcome = svc.store(ASSOC, request(encoded(SOPInstanceUID="1.2.3.4.6")))  # a new instance, same series
    assert outcome.status == 0xA700
    assert outcome.comment is not None and "Input/output error" in outcome.comment
    assert calls == ["1.2.3.4"]
    assert len(publisher.events) == 3  # published meanwhile, but Success was not answered
    svc.close()


def test_without_fsync_nothing_is_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    publisher = RecordingPublisher()
    svc, _ = service(tmp_path, publisher, fsync=False)
    monkeypatch.setattr(storage, "fsync_folder", lambda folder: pytest.fail("synced"))
    monkeypatch.setattr(storage, "_sync_data", lambda fd: pytest.fail("synced"))
    assert svc.store(ASSOC, request(encoded())).status == 0
    svc.close()
