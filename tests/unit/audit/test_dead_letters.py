"""A dead letter's audit event takes what the refused payload still says, and nothing it cannot read."""

from __future__ import annotations

import msgspec

from dicomflow.audit.dead_letters import MessageContext, dead_letter_audit, message_context


def test_the_context_comes_from_the_payload_when_it_has_it() -> None:
    payload = msgspec.json.encode({"tenant_id": "oncology", "study_uid": "1.2", "sop_uid": "1.2.3", "extra": [1]})
    assert message_context(payload) == MessageContext("oncology", "1.2", "1.2.3", None)


def test_unreadable_or_mistyped_payloads_give_an_empty_context() -> None:
    for payload in (None, b"", b"\xff not json", b"[1, 2]", b'{"tenant_id": 5}'):
        assert message_context(payload) == MessageContext()


def test_the_event_names_the_study_and_sop_or_else_the_message() -> None:
    with_study = dead_letter_audit(node_id="n", default_tenant="default", source="log_queue[1]@7",
                                   error_class="wire-format", reason="bad", context=MessageContext("t", "1.2", "1.2.3"))
    assert with_study.tenant_id == "t"
    assert [o.object_id for o in with_study.participant_objects] == ["1.2"]
    assert with_study.participant_objects[0].details == {"source": "log_queue[1]@7", "error_class": "wire-format",
                                                         "sop_uid": "1.2.3"}
    bare = dead_letter_audit(node_id="n", default_tenant="default", source="log_queue[1]@8",
                             error_class="wire-format", reason="bad", context=MessageContext())
    assert bare.tenant_id == "default" and bare.event_outcome == 8
    assert [o.object_id for o in bare.participant_objects] == ["log_queue[1]@8"]


def test_a_tenant_over_64_bytes_is_cut_at_a_character_boundary() -> None:
    event = dead_letter_audit(node_id="n", default_tenant="d", source="s", error_class="c", reason="r",
                              context=MessageContext(tenant_id="é" * 40))
    assert event.tenant_id == "é" * 32
