"""Dead-letter records: original key, bytes and headers kept; reason headers added; audit event."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from dicomflow.kafka import dlq
from dicomflow.kafka.records import Record
from dicomflow.models import encode
from dicomflow.pipeline.parse_worker import FILE_MISSING, WIRE_FORMAT
from dicomflow.pipeline.types import Poison


def test_dead_letter_keeps_the_original_key_bytes_and_headers() -> None:
    record = Record("storage_queue", 3, 1234, b"series-key", b"{broken", headers=(("trace", b"abc"),))
    letter = Poison(record, WIRE_FORMAT, "invalid DicomStoreMeta: not valid JSON").letter(node_id="node-7",
        when=dt.datetime(2025, 1, 2, 3, 4, 5, 600000),
    )
    assert letter.key == b"series-key"
    assert letter.value == b"{broken"
    assert letter.headers[0] == ("trace", b"abc")
    h = dlq.headers_dict(letter.headers)
    assert h[dlq.HEADER_ERROR_CLASS] == "wire-format"
    assert h[dlq.HEADER_REASON] == "invalid DicomStoreMeta: not valid JSON"
    assert h[dlq.HEADER_SOURCE_TOPIC] == "storage_queue"
    assert h[dlq.HEADER_SOURCE_PARTITION] == "3"
    assert h[dlq.HEADER_SOURCE_OFFSET] == "1234"
    assert h[dlq.HEADER_TIME] == "2025-01-02T03:04:05.600000"
    assert h[dlq.HEADER_NODE] == "node-7"
    assert letter.as_raw() == (b"series-key", b"{broken", letter.headers)


def test_a_tombstone_becomes_an_empty_value_and_keeps_a_null_key() -> None:
    letter = Poison(Record("t", 0, 0, None, None), WIRE_FORMAT, "empty").letter(node_id="n")
    assert letter.key is None and letter.value == b""


def test_a_replayed_dead_letter_does_not_stack_our_headers() -> None:
    first = Poison(Record("t", 0, 5, b"k", b"v"), WIRE_FORMAT, "first").letter(node_id="n")
    again = Poison(Record("t.dlq", 0, 0, b"k", b"v", headers=tuple(first.headers)), FILE_MISSING, "second").letter(node_id="n"
    )
    names = [k for k, _ in again.headers]
    assert names.count(dlq.HEADER_ERROR_CLASS) == 1
    assert dlq.headers_dict(again.headers)[dlq.HEADER_REASON] == "second"


def test_long_reasons_are_cut_on_a_character_boundary() -> None:
    reason = "é" * 2000
    letter = Poison(Record("t", 0, 0, None, b"x"), WIRE_FORMAT, reason).letter(node_id="n")
    value = dict(letter.headers)[dlq.HEADER_REASON]
    assert len(value) <= dlq.REASON_MAX_BYTES
    value.decode("utf-8")  # never split inside a character


def test_audit_event_of_a_decoded_event_names_tenant_study_sop_and_file(tmp_path: Path) -> None:
    from dicomflow.corpus import make_corpus

    event = make_corpus(tmp_path, 1, tenant_id="tenant-a").events[0]
    poison = Poison(Record("storage_queue", 2, 77, b"k", encode(event)), FILE_MISSING, "gone", event)
    audit = poison.audit(node_id="node", default_tenant="default")
    assert audit.tenant_id == "tenant-a"
    assert audit.event_outcome == 8
    assert audit.event_outcome_description == "gone"
    ids = {o.object_id for o in audit.participant_objects}
    assert event.study_uid in ids and event.file_path in ids
    details = audit.participant_objects[0].details
    assert details["source"] == "storage_queue[2]@77"
    assert details["error_class"] == FILE_MISSING
    assert details["sop_uid"] == event.sop_uid


def test_audit_event_reads_what_it_can_from_an_invalid_event() -> None:
    value = b'{"tenant_id": "tenant-b", "study_uid": "1.2.3", "file_size": "not a number"}'
    audit = Poison(Record("t", 0, 1, None, value), WIRE_FORMAT, "bad").audit(node_id="n", default_tenant="d")
    assert audit.tenant_id == "tenant-b"
    assert audit.participant_objects[0].object_id == "1.2.3"


def test_audit_event_of_garbage_uses_the_default_tenant_and_names_the_message() -> None:
    audit = Poison(Record("t", 4, 9, None, b"\xff\xfe"), WIRE_FORMAT, "bad").audit(node_id="n", default_tenant="d")
    assert audit.tenant_id == "d"
    assert audit.participant_objects[0].object_id == "t[4]@9"
