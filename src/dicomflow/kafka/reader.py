"""Reading what really reached the broker: a topic from its beginning, or how many messages topics hold.

:func:`read_all` reads every message of a topic, all partitions from offset
0 up to the end as it was when called, without joining a consumer group
(``assign``, no commits). Tests, the demo and operators use it to see what
really reached the broker; :func:`message_counts` only asks the watermarks.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from dicomflow.kafka._auth import AuthWatch
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.config import client_config, settings_for
from dicomflow.kafka.exceptions import TopicAdminError, kafka_error_text
from dicomflow.kafka.records import Record, record_of
from dicomflow.settings import KafkaSettings


def group_less_consumer(settings: KafkaSettings, client_id: str, watch: AuthWatch | None = None,
                        extra: Mapping[str, Any] | None = None) -> Consumer:
    """A consumer that reads by ``assign`` only: a throw-away group id, nothing committed or stored.

    ``extra`` adds librdkafka properties (``enable.partition.eof``, ``isolation.level`` ...).
    """
    config = {
        **client_config(settings, client_id=client_id),
        "group.id": f"{client_id}-{uuid.uuid4().hex}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "logger": librdkafka_log,
        **(extra or {}),
    }
    if watch is not None:
        config["error_cb"] = watch
    return Consumer(config)


def read_all(kafka: KafkaSettings | str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every message of ``topic`` up to its end as of the call, sorted by partition and offset.

    Reads each partition from its first offset with ``assign`` (no consumer
    group membership, no commits) until the consumer's position reaches the
    partition's high watermark measured at the start.

    Raises:
        TopicAdminError: the topic does not exist, or the end was not reached
            within ``timeout_s``.
    """
    settings = settings_for(kafka)
    deadline = time.monotonic() + timeout_s
    watch = AuthWatch(settings.brokers, f"reader of {topic}")
    consumer = group_less_consumer(settings, "dicomflow-reader", watch)
    try:
        ends = _watermarks(consumer, settings.brokers, topic, timeout_s)
        wanted = {p: high for p, (_, high) in ends.items() if high > 0}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in wanted])
        records: list[Record] = []
        while wanted:
            if watch.failure is not None:
                raise TopicAdminError(f"read_all {topic}: {watch.failure}") from watch.failure
            if time.monotonic() >= deadline:
                raise TopicAdminError(
                    f"read_all {topic}: end not reached within {timeout_s:.0f} s "
                    f"({len(records)} message(s) read, partitions {sorted(wanted)} unfinished)")
            for msg in consumer.consume(1000, 0.2):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise TopicAdminError(f"read_all {topic}: {error.str()} ({error.name()})")
                records.append(record_of(msg))
            positions = consumer.position([TopicPartition(topic, p) for p in wanted])
            for tp in positions:
                if tp.offset >= wanted[tp.partition]:
                    del wanted[tp.partition]
        records.sort(key=lambda r: (r.partition, r.offset))
        return records
    finally:
        consumer.close()


def _watermarks(consumer: Consumer, brokers: str, topic: str, timeout_s: float) -> dict[int, tuple[int, int]]:
    """(low, high) watermark of each partition of ``topic``.

    Raises:
        TopicAdminError: the topic is missing or unreadable, or a partition's
            offsets are not known within ``timeout_s``.
    """
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot read the metadata of {topic} on {brokers}: {kafka_error_text(exc)}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        reason = described.error.str() if described is not None and described.error is not None else "no partitions"
        raise TopicAdminError(f"topic {topic} is not readable on {brokers}: {reason}")
    deadline = time.monotonic() + timeout_s
    return {partition: partition_watermarks(consumer, brokers, topic, partition, deadline)
            for partition in described.partitions}


def partition_watermarks(consumer: Consumer, brokers: str, topic: str, partition: int,
                         deadline: float) -> tuple[int, int]:
    """(low, high) watermark of ``topic[partition]``, asked again until ``deadline`` (monotonic) while not ready.

    Raises:
        TopicAdminError: a permanent error, or still not ready at ``deadline``.
    """
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition),
                                                       timeout=max(0.1, deadline - time.monotonic()))
            return int(low), int(high)
        except KafkaException as exc:
            # A topic created a moment ago may not have its leader in place yet.
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            later = err is not None and (err.retriable() or err.code() in _NOT_READY)
            if not later or time.monotonic() >= deadline:
                raise TopicAdminError(f"cannot read the end offsets of {topic}[{partition}] on {brokers}: "
                                      f"{kafka_error_text(exc)}") from exc
            time.sleep(0.1)


def message_counts(kafka: KafkaSettings | str, topics: list[str], timeout_s: float = 30.0) -> dict[str, int]:
    """Messages each topic holds now (high minus low watermark, summed over its partitions); 0 for a missing topic.

    Raises:
        TopicAdminError: the brokers cannot be reached, or a partition's
            offsets are not known within ``timeout_s``.
    """
    settings = settings_for(kafka)
    consumer = group_less_consumer(settings, "dicomflow-counter")
    try:
        try:
            present = consumer.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise TopicAdminError(f"cannot list the topics on {settings.brokers}: {kafka_error_text(exc)}") from exc
        counts: dict[str, int] = {}
        for topic in topics:
            info = present.get(topic)
            if info is None or info.error is not None:
                counts[topic] = 0
                continue
            marks = _watermarks(consumer, settings.brokers, topic, timeout_s)
            counts[topic] = sum(high - low for low, high in marks.values())
        return counts
    finally:
        consumer.close()


#: Errors of a partition whose leader is not in place yet (a topic created a moment ago).
_NOT_READY = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)


__all__ = ["group_less_consumer", "message_counts", "partition_watermarks", "read_all"]
