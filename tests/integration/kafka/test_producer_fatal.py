"""A producer that hit a fatal librdkafka error is rebuilt in place; the next send goes through.

confluent_kafka offers no hook to make a real broker raise a fatal error
(librdkafka's ``rd_kafka_test_fatal_error`` is not exposed), so the error is
injected where librdkafka delivers it: a real ``confluent_kafka.KafkaError``
with ``fatal=True`` is handed to the very callback object the producer was
created with (``error_cb``). Everything after that is real: the rebuild, the
batch in flight reported failed, and the next messages acknowledged by the
shared broker and read back from the topic.
"""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaError

from dicomflow.kafka.admin import create_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.kafka.routing import raw_segments
from dicomflow.settings import Settings
from tests.integration.consumer_support import wait_for


def test_fatal_error_rebuilds_the_producer_and_sending_goes_on(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    create_topics(settings.kafka, settings.topics)
    topic = settings.topics.dlq
    with Publisher(settings.kafka, settings.topics) as publisher:
        engine = publisher._engine
        publisher.send_raw(topic, [(b"k", b"before", None)]).raise_for_failures()
        first = engine._producer
        with caplog.at_level(logging.ERROR, logger="dicomflow.kafka.engine"):
            engine._auth(KafkaError(KafkaError._FENCED, "injected: producer fenced", fatal=True))
            wait_for("the rebuild", lambda: engine.rebuilds == 1, 10, every_s=0.01)
        assert engine._producer is not first
        assert any("fatal error" in r.getMessage() and "_FENCED" in r.getMessage() for r in caplog.records)
        t0 = time.monotonic()
        result = publisher.send_raw(topic, [(b"k", b"after", None)])
        assert result.ok and result.delivered == 1 and time.monotonic() - t0 < 10
    values = [r.value for r in read_all(settings.kafka, topic)]
    assert values == [b"before", b"after"]


def test_a_batch_in_flight_at_the_fatal_error_is_reported_failed(settings: Settings) -> None:
    create_topics(settings.kafka, settings.topics)
    with Publisher(settings.kafka, settings.topics) as publisher:
        engine = publisher._engine
        segments = raw_segments(settings.topics.dlq, [(None, b"in flight", None)])
        tracker, _, deadline = engine.start(segments, 30.0)
        with engine._rebuild_lock:  # hold the rebuild until the error is in, as if both happened at once
            for _full in engine.queue(tracker, segments, deadline):
                pass
            engine._auth(KafkaError(KafkaError._FENCED, "injected", fatal=True))
        assert tracker.wait(10)
        result = tracker.result
        assert engine.rebuilds == 1
        # Either the acknowledgement came first (delivered) or the rebuild failed the batch, naming why;
        # never both, never silence.
        assert result.delivered + len(result.failures) == 1
        if result.failures:
            assert "fatal error" in result.failures[0].reason
        publisher.send_raw(settings.topics.dlq, [(None, b"next", None)]).raise_for_failures()
