"""The DICOMweb audit sender: events queued by requests reach the real Kafka audit topic; none vanish silently."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from dicomflow.audit import dicomweb
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.metrics.web import WebMetrics
from dicomflow.models import AuditEvent, decode
from dicomflow.settings import Settings, TopicSettings
from dicomflow.web.auditing import AuditSender


@pytest.fixture
def audit_topics(base_settings: Settings, topics: TopicSettings) -> Iterator[TopicSettings]:
    create_topics(base_settings.kafka, topics)
    yield topics
    delete_topics(base_settings.kafka, topics.all())


def _event(n: int) -> AuditEvent:
    return dicomweb.instances_accessed(node_id="web-test", tenant_id="default", study_uid=f"1.2.3.{n}",
                                    instance_count=1, user=f"user-{n}", user_address="127.0.0.1",
                                    resource=f"/studies/1.2.3.{n}/metadata", patient_id=None)


def _failures(metrics: WebMetrics) -> float:
    return metrics.registry.get_sample_value("dicomflow_web_audit_failures_total") or 0.0


def test_queued_events_are_published_and_a_full_queue_is_counted_and_logged(
        base_settings: Settings, audit_topics: TopicSettings, caplog: pytest.LogCaptureFixture) -> None:
    metrics = WebMetrics(CollectorRegistry())
    with Publisher(base_settings.kafka, audit_topics, client_id="web-audit-test") as publisher:
        # a long linger keeps the first events queued, so the queue is deterministically full
        sender = AuditSender(publisher, metrics, capacity=3, linger_s=30.0)
        sender.submit([_event(1), _event(2)])
        with caplog.at_level(logging.ERROR, logger="dicomflow.web.auditing"):
            sender.submit([_event(3), _event(4)])  # 2 + 2 > 3: refused, counted, logged
        assert sender.queued == 2
        assert _failures(metrics) == 2
        assert any("2 audit event(s) not published" in r.getMessage() for r in caplog.records)
        sender.close(30.0)  # shutdown publishes what is queued
        assert sender.queued == 0
        sender.submit([_event(5)])  # after close: refused and counted too
        assert _failures(metrics) == 3
    published = [decode(r.value or b"", AuditEvent) for r in read_all(base_settings.kafka, audit_topics.audit)]
    users = sorted(p.user_id for e in published for p in e.active_participants if p.user_id.startswith("user-"))
    assert users == ["user-1", "user-2"]


def test_events_are_batched_in_the_background(base_settings: Settings, audit_topics: TopicSettings) -> None:
    metrics = WebMetrics(CollectorRegistry())
    with Publisher(base_settings.kafka, audit_topics, client_id="web-audit-test") as publisher:
        sender = AuditSender(publisher, metrics, linger_s=0.05)
        for n in range(300):
            sender.submit([_event(n)])
        sender.close(30.0)
    published = read_all(base_settings.kafka, audit_topics.audit)
    assert len(published) == 300 and _failures(metrics) == 0
