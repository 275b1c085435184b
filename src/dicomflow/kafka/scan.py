"""Reading topics from the beginning to their end without joining a group: operator tools' reads.

:func:`scan` reads every partition of some topics from its first offset with
``assign`` (no group membership, no commits, so it never moves anyone's
offsets) until librdkafka reports the partition's end. The end is the
*last stable offset*: records of a Kafka transaction still open, or
aborted, are not returned (``isolation.level=read_committed``), which is
what makes a transactional ledger (:mod:`dicomflow.dlq.redrive`) exact.
:func:`read_at` reads one record at its coordinates.

Unlike :func:`dicomflow.kafka.reader.read_all` (which stops at the high
watermark, and whose position never reaches it past a transaction marker),
the end here is librdkafka's partition-EOF event.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from dicomflow.kafka.exceptions import TopicAdminError, kafka_error_text
from dicomflow.kafka.reader import group_less_consumer, partition_watermarks
from dicomflow.kafka.records import Record, record_of
from dicomflow.settings import KafkaSettings

#: The end is the partition-EOF event, of committed records only (see the module docstring).
_SCAN = {"enable.partition.eof": True, "isolation.level": "read_committed"}


def _partitions(consumer: Consumer, kafka: KafkaSettings, topic: str, timeout_s: float) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise TopicAdminError(f"cannot read the metadata of {topic} on {kafka.brokers}: {kafka_error_text(exc)}") from exc
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        reason = described.error.str() if described is not None and described.error is not None else "missing"
        raise TopicAdminError(f"topic {topic} is not readable on {kafka.brokers}: {reason}")
    return sorted(described.partitions)


def scan(kafka: KafkaSettings, topics: Sequence[str], *, timeout_s: float = 30.0) -> list[Record]:
    """Every committed record of ``topics`` up to their end, sorted by topic, partition and offset.

    Raises:
        TopicAdminError: a topic does not exist, the brokers do not answer,
            or the end was not reached within ``timeout_s``.
    """
    if not topics:
        return []
    consumer = group_less_consumer(kafka, "dicomflow-scan", extra=_SCAN)
    try:
        deadline = time.monotonic() + timeout_s
        wanted: set[tuple[str, int]] = set()
        for topic in topics:
            for p in _partitions(consumer, kafka, topic, timeout_s):
                low, high = partition_watermarks(consumer, kafka.brokers, topic, p, deadline)
                if high > low:  # an empty partition has nothing to wait for
                    wanted.add((topic, p))
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in sorted(wanted)])
        records: list[Record] = []
        while wanted:
            if time.monotonic() >= deadline:
                unfinished = ", ".join(f"{t}[{p}]" for t, p in sorted(wanted))
                raise TopicAdminError(f"end of {unfinished} not reached within {timeout_s:.0f} s on {kafka.brokers} "
                                      f"({len(records)} record(s) read)")
            for msg in consumer.consume(1000, 0.2):
                err = msg.error()
                if err is None:
                    records.append(record_of(msg))
                elif err.code() == KafkaError._PARTITION_EOF:
                    wanted.discard((msg.topic() or "", msg.partition() or 0))
                else:
                    raise TopicAdminError(f"reading {msg.topic()} on {kafka.brokers}: {err.str()} ({err.name()})")
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records
    finally:
        consumer.close()


def read_at(kafka: KafkaSettings, topic: str, partition: int, offset: int, *, timeout_s: float = 15.0) -> Record | None:
    """The record at ``topic[partition]@offset``; None when there is none (deleted by retention, never written).

    Raises:
        TopicAdminError: the topic does not exist or the brokers do not answer.
    """
    consumer = group_less_consumer(kafka, "dicomflow-scan", extra=_SCAN)
    try:
        if partition not in _partitions(consumer, kafka, topic, timeout_s):
            return None
        deadline = time.monotonic() + timeout_s
        low, high = partition_watermarks(consumer, kafka.brokers, topic, partition, deadline)
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(topic, partition, offset)])
        while time.monotonic() < deadline:
            for msg in consumer.consume(1, 0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        return None  # the offset was a transaction marker or an aborted record
                    raise TopicAdminError(f"reading {topic}[{partition}]@{offset}: {err.str()} ({err.name()})")
                return record_of(msg) if msg.offset() == offset else None
        raise TopicAdminError(f"{topic}[{partition}]@{offset} not read within {timeout_s:.0f} s on {kafka.brokers}")
    finally:
        consumer.close()


__all__ = ["read_at", "scan"]
