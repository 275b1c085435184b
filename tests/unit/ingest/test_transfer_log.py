"""The transfer log: one tally per session key, audited when the session ends (or alone, when late)."""

from __future__ import annotations

import logging

import pytest

from dicomflow.audit import events as audit
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.models import AuditEvent

CT = "1.2.840.10008.5.1.4.1.1.2"


def _count(event: AuditEvent) -> str:
    return event.participant_objects[0].details["instance_count"]


def test_each_key_is_a_session_of_its_own() -> None:
    emitted: list[AuditEvent] = []
    log = TransferLog("node-1", emitted.extend)
    first, second = SessionKey("association"), SessionKey("association")
    assert first != second and first == first and len({first, second}) == 2
    log.opened(first, Peer("CT01", "10.0.0.1", "DICOMFLOW", None))
    log.opened(second, Peer("MR01", "10.0.0.2", "DICOMFLOW", None))
    for key in (first, second, second):
        log.stored(key, tenant="t", study_uid="1.2.3", sop_class_uid=CT, patient_id="P1")
    assert log.peer_of(second) == Peer("MR01", "10.0.0.2", "DICOMFLOW", None)
    assert log.closed(first) == (1, 0)
    assert log.closed(second) == (2, 0)
    assert [_count(e) for e in emitted] == ["1", "2"]
    assert log.pending() == 0


def test_a_store_after_its_session_ended_is_audited_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="dicomflow.ingest.transfer_log")
    emitted: list[AuditEvent] = []
    log = TransferLog("node-1", emitted.extend)
    request = SessionKey("stow-rs")
    log.opened(request, Peer("alice", "10.0.0.3", "DICOMWEB", None))
    assert log.closed(request) == (0, 0) and emitted == []  # nothing stored: nothing to audit
    log.failed(request, tenant="t", study_uid=None, outcome=audit.MAJOR_FAILURE, reason="racing the end")
    assert [_count(e) for e in emitted] == ["1"]  # not lost
    assert "never opened" not in caplog.text  # it was opened: only late
    log.stored(SessionKey("publish"), tenant="t", study_uid="1.2.3", sop_class_uid=CT, patient_id=None)
    assert len(emitted) == 2 and "never opened" in caplog.text
