"""The consumed-record type every stage shares, without the Kafka client.

:class:`Record` is what :class:`~dicomflow.kafka.consumer.KafkaConsumer`
yields and :func:`~dicomflow.kafka.reader.read_all` returns: a message copied
out of confluent-kafka. It lives here, apart from the clients, so the parse
workers and the pipeline's pure logic can use it without importing
confluent_kafka (and librdkafka) into every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from dicomflow.errors import ConsumerError

if TYPE_CHECKING:
    from confluent_kafka import Message

#: A topic partition: (topic, partition).
TP = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka message, detached from the client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int | None = None

    @property
    def tp(self) -> TP:
        """The record's (topic, partition)."""
        return (self.topic, self.partition)

    @property
    def source(self) -> str:
        """Where the record came from, as logs and DLQ headers name it: ``topic[2]@1234``."""
        return f"{self.topic}[{self.partition}]@{self.offset}"


def record_of(msg: Message) -> Record:
    """Copy what the pipeline needs out of a confluent-kafka message (one without an error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    if topic is None or partition is None or offset is None:  # only error events lack them
        raise ConsumerError(f"message without coordinates: {msg.error()}")
    ts_type, ts = msg.timestamp()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=msg.key(),
        value=msg.value(),
        headers=_headers(msg),
        timestamp_ms=ts if ts_type != 0 else None,
    )


def _headers(msg: Message) -> tuple[tuple[str, bytes], ...]:
    raw: list[tuple[str, object]] | None = msg.headers()  # type: ignore[assignment]
    if not raw:
        return ()
    out: list[tuple[str, bytes]] = []
    for name, value in raw:
        if isinstance(value, bytes):
            out.append((name, value))
        elif isinstance(value, str):
            out.append((name, value.encode("utf-8")))
        else:
            out.append((name, b""))
    return tuple(out)


__all__ = ["TP", "Record", "record_of"]
