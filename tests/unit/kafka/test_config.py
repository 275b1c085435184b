"""The producer's librdkafka configuration, and the batch bookkeeping that needs no broker."""

from __future__ import annotations

import json
from pathlib import Path
from types import MappingProxyType
from typing import get_args

import pytest

from dicomflow.errors import ConfigError, PublishError
from dicomflow.kafka.config import client_config, producer_config, redacted
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure, Segment, Tracker
from dicomflow.kafka.exceptions import DeliveryError
from dicomflow.kafka.producer import Publisher
from dicomflow.settings import Compression, KafkaSettings, TopicSettings, load_settings

#: A port nothing listens on: the client is created but never connects.
NOWHERE = "127.0.0.1:9"


def test_defaults_give_an_idempotent_acks_all_producer() -> None:
    config = producer_config(KafkaSettings())
    assert config["enable.idempotence"] is True
    assert config["acks"] == "all"
    assert config["compression.type"] == "snappy"
    assert config["bootstrap.servers"] == "127.0.0.1:19092"
    assert config["message.timeout.ms"] == 30000


def test_batching_buffering_and_retry_settings_are_passed() -> None:
    kafka = KafkaSettings(
        linger_ms=17, batch_num_messages=321, batch_size=65536, queue_buffering_max_messages=4242,
        queue_buffering_max_kbytes=2048, message_timeout_ms=12345, request_timeout_ms=6789,
        retry_backoff_ms=250, retry_backoff_max_ms=4000,
    )
    config = producer_config(kafka)
    assert {k: config[k] for k in (
        "linger.ms", "batch.num.messages", "batch.size", "queue.buffering.max.messages",
        "queue.buffering.max.kbytes", "message.timeout.ms", "request.timeout.ms",
        "retry.backoff.ms", "retry.backoff.max.ms",
    )} == {
        "linger.ms": 17, "batch.num.messages": 321, "batch.size": 65536, "queue.buffering.max.messages": 4242,
        "queue.buffering.max.kbytes": 2048, "message.timeout.ms": 12345, "request.timeout.ms": 6789,
        "retry.backoff.ms": 250, "retry.backoff.max.ms": 4000,
    }


@pytest.mark.parametrize("codec", get_args(Compression))
def test_every_configured_codec_reaches_the_producer(codec: str) -> None:
    publisher = Publisher(KafkaSettings(brokers=NOWHERE, compression_codec=codec), TopicSettings())  # type: ignore[arg-type]
    try:
        assert publisher.config["compression.type"] == codec
    finally:
        publisher.close(timeout_s=1)


def test_reference_application_json_keys_reach_the_producer(tmp_path: Path) -> None:
    path = tmp_path / "application.json"
    path.write_text(json.dumps({"kafka": {
        "brokers": "kafka-1:9092,kafka-2:9092", "queue_buffering_max_messages": 5000,
        "queue_buffering_max_kbytes": 4096, "queue_buffering_max_ms": 40, "batch_num_messages": 900,
        "compression_codec": "lz4",
    }}))
    config = producer_config(load_settings(path).kafka)
    assert config["bootstrap.servers"] == "kafka-1:9092,kafka-2:9092"
    assert config["queue.buffering.max.messages"] == 5000
    assert config["queue.buffering.max.kbytes"] == 4096
    assert config["linger.ms"] == 40
    assert config["batch.num.messages"] == 900
    assert config["compression.type"] == "lz4"


def test_security_settings_pass_through_to_every_client() -> None:
    client = MappingProxyType({
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "dicomflow",
        "sasl.password": "s3cret", "ssl.ca.location": "/etc/ssl/ca.pem",
    })
    kafka = KafkaSettings(client=client)
    for config in (producer_config(kafka), client_config(kafka)):
        assert {k: config[k] for k in client} == dict(client)
    assert redacted(producer_config(kafka))["sasl.password"] == "***"


def test_pass_through_may_tune_but_not_weaken_the_guarantee() -> None:
    tuned = producer_config(KafkaSettings(client=MappingProxyType({"linger.ms": "50", "acks": "-1"})))
    assert tuned["linger.ms"] == "50"
    for key, value in (("acks", "1"), ("enable.idempotence", "false"), ("request.required.acks", "0")):
        with pytest.raises(ConfigError) as info:
            producer_config(KafkaSettings(client=MappingProxyType({key: value})))
        assert info.value.key == f"kafka.client.{key}"


def test_a_property_librdkafka_does_not_know_is_a_config_error() -> None:
    kafka = KafkaSettings(brokers=NOWHERE, client=MappingProxyType({"no.such.property": "1"}))
    with pytest.raises(ConfigError, match=r"no\.such\.property"):
        Publisher(kafka, TopicSettings())


def test_sending_after_close_is_refused_and_sends_nothing() -> None:
    publisher = Publisher(KafkaSettings(brokers=NOWHERE), TopicSettings())
    publisher.close(timeout_s=1)
    publisher.close(timeout_s=1)  # idempotent
    with pytest.raises(PublishError, match="closed"):
        publisher.send_raw("t", [(None, b"x", None)])


def test_batch_result_raises_naming_the_failures() -> None:
    assert BatchResult(delivered=3).ok
    BatchResult(delivered=3).raise_for_failures()
    failures = [DeliveryFailure(i, "storage_queue", f"k{i}", "Local: Message timed out") for i in range(5)]
    result = BatchResult(delivered=2, failures=failures)
    assert result.failed_indices() == {0, 1, 2, 3, 4}
    with pytest.raises(DeliveryError) as info:
        result.raise_for_failures()
    assert isinstance(info.value, PublishError) and not info.value.poison
    assert info.value.failures == failures
    assert "5 message(s) not delivered, 2 delivered" in str(info.value)
    assert "#0 storage_queue key=k0: Local: Message timed out" in str(info.value)


def _tracker(done: list[BatchResult]) -> Tracker:
    segments = [
        Segment(0, "storage_queue", ["s0", "s1", "s1"], [b"a", b"b", b"c"]),
        Segment(3, "log_queue", ["t0", "t1", "t2"], [b"a", b"b", b"c"]),
    ]
    return Tracker(segments, describe=lambda err: "unused", on_done=done.append)


def test_tracker_maps_slots_back_to_batch_index_topic_and_key() -> None:
    done: list[BatchResult] = []
    tracker = _tracker(done)
    tracker._report(0, None)
    tracker.fail(1, "boom")
    tracker._report(3, None)
    tracker.fail(5, "boom")
    assert not done
    tracker._report(2, None)
    tracker._report(4, None)
    assert len(done) == 1 and tracker.wait(0)
    result = done[0]
    assert result.delivered == 4
    assert [(f.index, f.topic, f.key) for f in result.failures] == [(1, "storage_queue", "s1"), (2, "log_queue", "t2")]


def test_tracker_abandon_fails_the_unreported_and_ignores_late_reports() -> None:
    done: list[BatchResult] = []
    tracker = _tracker(done)
    tracker._report(0, None)
    tracker._report(0, None)  # a second report for a slot changes nothing
    tracker.abandon("no acknowledgement within 1.0 s")
    tracker._report(1, None)  # arrives after the caller gave up: ignored
    assert len(done) == 1
    assert done[0].delivered == 1
    assert [(f.index, f.topic) for f in done[0].failures] == [
        (0, "log_queue"), (1, "log_queue"), (1, "storage_queue"), (2, "log_queue"), (2, "storage_queue")]
    assert {f.reason for f in done[0].failures} == {"no acknowledgement within 1.0 s"}


def test_an_empty_batch_is_complete_at_once() -> None:
    done: list[BatchResult] = []
    tracker = Tracker([Segment(0, "t", [], [])], describe=str, on_done=done.append)
    assert tracker.wait(0) and done == [BatchResult()]

