"""The consumed-record type every stage shares, without the Kafka client.

:class:`Record` is what :class:`~dicomflow.kafka.consumer.KafkaConsumer`
yields and :func:`~dicomflow.kafka.admin.read_all` returns: a message copied
out of confluent-kafka. It lives here, apart from the clients, so the parse
workers and the pipeline's pure logic can use it without importing
confluent_kafka (and librdkafka) into every process.
"""

from __future__ import annotations

from dataclasses import dataclass

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


__all__ = ["TP", "Record"]
