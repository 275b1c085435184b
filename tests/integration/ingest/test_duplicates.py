"""The same SOP Instance UID again, over C-STORE (both engines) and ``publish --copy-into-storage``, real broker."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from dicomflow.kafka.producer import Publisher
from dicomflow.scanner.publish import FolderPublisher
from dicomflow.settings import Settings
from tests.integration.ingest_support import (
    make_topics,
    read_audit,
    read_dataset,
    read_store_events,
    running_receiver,
    stored_files,
    with_receiver,
)
from tests.integration.receiver.test_scp import instance, send

SOP = "1.2.826.0.1.3680043.8.498.77.9.1"


@pytest.fixture(params=["native", "pynetdicom"])
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def configured(settings: Settings, engine: str, policy: str) -> Settings:
    s = with_receiver(settings, engine=engine)
    s = dataclasses.replace(s, ingest=dataclasses.replace(s.ingest, duplicates=policy))  # type: ignore[arg-type]
    make_topics(s)
    return s


@pytest.mark.parametrize("policy", ["reject", "keep", "replace"])
def test_c_store_duplicate(settings: Settings, engine: str, policy: str) -> None:
    s = configured(settings, engine, policy)
    first = instance(SOP, PatientName="First^Version")
    other = instance(SOP, PatientName="Second^Version")
    with running_receiver(s):
        statuses = [x.Status for x in send(s.receiver.port, [first])]
        statuses += [x.Status for x in send(s.receiver.port, [first], calling="OTHER_AE")]  # identical: no-op
        answer = send(s.receiver.port, [other])[0]
    assert statuses == [0, 0]
    [stored] = stored_files(s.storage.root)
    events = [e for _, e in read_store_events(s, s.topics.main)]
    duplicates = [a for a in read_audit(s) if a.event_type and a.event_type[0].code == "DUP"]
    assert len(duplicates) == 1
    details = duplicates[0].participant_objects[0].details
    assert details["sop_uid"] == SOP
    if policy == "reject":
        assert answer.Status == 0x0111 and "already stored" in answer.ErrorComment
        assert read_dataset(stored).PatientName == "First^Version"
        assert len(events) == 1
        assert details["decision"] == "rejected" and duplicates[0].event_outcome == 4
    elif policy == "keep":
        assert answer.Status == 0
        assert read_dataset(stored).PatientName == "First^Version"
        assert len(events) == 1
        assert details["decision"] == "kept" and duplicates[0].event_outcome == 0
    else:
        assert answer.Status == 0
        assert read_dataset(stored).PatientName == "Second^Version"
        assert len(events) == 2 and events[0].trace_id != events[1].trace_id
        assert events[1].file_size == stored.stat().st_size
        assert details["decision"] == "replaced" and duplicates[0].event_action == "U"
    assert sorted(p.name for p in stored.parent.iterdir()) == [stored.name]  # no temporary file or backup left


@pytest.mark.parametrize("policy", ["reject", "keep", "replace"])
def test_publish_copy_into_storage_duplicate(settings: Settings, tmp_path: Path, policy: str) -> None:
    s = configured(settings, "native", policy)
    folder = tmp_path / "incoming"
    folder.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        instance(SOP, PatientName="First^Version").save_as(folder / "a.dcm", enforce_file_format=True)
        instance(SOP, PatientName="First^Version").save_as(tmp_path / "same.dcm", enforce_file_format=True)
        instance(SOP, PatientName="Second^Version").save_as(tmp_path / "other.dcm", enforce_file_format=True)
    publisher = Publisher(s.kafka, s.topics)
    try:
        runner = FolderPublisher(s, publisher, copy_into_storage=True)
        first = runner.run([folder / "a.dcm"])
        same = runner.run([tmp_path / "same.dcm"])
        other = runner.run([tmp_path / "other.dcm"])
    finally:
        publisher.close()
    assert len(first.published) == 1
    assert not same.published and "identical content" in same.skipped[0].reason
    [stored] = stored_files(s.storage.root)
    events = read_store_events(s, s.topics.main)
    if policy == "replace":
        assert len(other.published) == 1 and len(events) == 2
        assert read_dataset(stored).PatientName == "Second^Version"
    else:
        assert not other.published and len(other.skipped) == 1 and not other.failed
        assert "already stored" in other.skipped[0].reason
        assert len(events) == 1
        assert read_dataset(stored).PatientName == "First^Version"
    duplicates = [a for a in read_audit(s) if a.event_type and a.event_type[0].code == "DUP"]
    assert [a.participant_objects[0].details["decision"] for a in duplicates] == [
        {"reject": "rejected", "keep": "kept", "replace": "replaced"}[policy]]
