"""One batch's dead letters: each topic and the audit events acknowledged once, a retry sends what is missing."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dicomflow.errors import PublishError
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure
from dicomflow.kafka.dlq import HEADER_ERROR_CLASS, DeadLetters, Poison, headers_dict
from dicomflow.kafka.records import Record
from dicomflow.models import AuditEvent

Raw = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


class Topics:
    """Records sends; refuses the topics named in ``refuse`` as many times as given."""

    def __init__(self, **refuse: int) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, int]] = []

    def _send(self, topic: str, n: int) -> BatchResult:
        if self.refuse.get(topic, 0) > 0:
            self.refuse[topic] -= 1
            return BatchResult(0, [DeliveryFailure(0, topic, None, "Message size too large")])
        self.sent.append((topic, n))
        return BatchResult(n, [])

    def send_raw(self, topic: str, items: Sequence[Raw], timeout_s: float | None = None) -> BatchResult:
        return self._send(topic, len(items))

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        return self._send("audit", len(events))


def letters() -> DeadLetters:
    from dicomflow.audit.dead_letters import dead_letter_audit, message_context

    out = DeadLetters()
    for topic, offset in (("a", 1), ("b", 2), ("a", 3)):
        p = Poison(Record(topic, 0, offset, b"k", b"{"), "wire-format", "not JSON")
        audit = dead_letter_audit(node_id="n", default_tenant="d", source=p.record.source, error_class=p.error_class,
                                  reason=p.reason, context=message_context(p.record.value))
        out.add(f"{topic}.dlq", p.letter(node_id="n"), audit)
    return out


def test_letters_go_to_their_topics_then_the_audit_events() -> None:
    dead, kafka = letters(), Topics()
    dead.publish(kafka)
    assert kafka.sent == [("a.dlq", 2), ("b.dlq", 1), ("audit", 3)]
    assert len(dead) == 3
    assert headers_dict(dead.letters["b.dlq"][0].headers)[HEADER_ERROR_CLASS] == "wire-format"


def test_a_retry_after_a_refused_topic_sends_only_what_was_not_acknowledged() -> None:
    dead, kafka = letters(), Topics(**{"b.dlq": 1})
    first = dead.letters["b.dlq"][0]
    with pytest.raises(PublishError):
        dead.publish(kafka)
    assert kafka.sent == [("a.dlq", 2)]
    dead.publish(kafka)
    assert kafka.sent == [("a.dlq", 2), ("b.dlq", 1), ("audit", 3)]
    assert dead.letters["b.dlq"][0] is first  # the very same letter, same headers and time
    dead.publish(kafka)
    assert len(kafka.sent) == 3  # everything acknowledged: nothing sent again
