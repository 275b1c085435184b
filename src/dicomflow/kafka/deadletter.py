"""The dead-letter topic's record format, shared by the consumer that writes it and the tools that read it.

A dead letter is the original message (key and bytes untouched, original
headers kept) plus dicomflow's headers saying what went wrong and where the
message came from (docs/architecture.md, "Topics"). The consumer
(:mod:`dicomflow.pipeline.dlq`) writes them; the operator's tools
(:mod:`dicomflow.dlq`) list, show and re-drive them. Both import the header
names from here, one floor below either of them.

A letter is named by its own coordinates in the dead-letter topic,
``<dlq-topic>:<partition>:<offset>`` (:func:`letter_id`): unique, stable,
and enough to read it back.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dicomflow.kafka.records import Record

HEADER_ERROR_CLASS = "dicomflow.error.class"
HEADER_REASON = "dicomflow.error.reason"
HEADER_SOURCE_TOPIC = "dicomflow.source.topic"
HEADER_SOURCE_PARTITION = "dicomflow.source.partition"
HEADER_SOURCE_OFFSET = "dicomflow.source.offset"
HEADER_TIME = "dicomflow.dead_lettered_at"
HEADER_NODE = "dicomflow.worker_node_id"
#: Set on a re-driven message: the letter it was re-driven from.
HEADER_REDRIVEN_FROM = "dicomflow.redriven_from"

#: Headers dicomflow adds to a dead letter; an original header of the same name is replaced, not repeated.
OWN_HEADERS = frozenset(
    {HEADER_ERROR_CLASS, HEADER_REASON, HEADER_SOURCE_TOPIC, HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET, HEADER_TIME, HEADER_NODE}
)


def letter_id(topic: str, partition: int, offset: int) -> str:
    """``<dlq-topic>:<partition>:<offset>``, the ID the tools print and take."""
    return f"{topic}:{partition}:{offset}"


def parse_letter_id(text: str) -> tuple[str, int, int]:
    """(topic, partition, offset) of a letter ID.

    Topic names may contain dots but never colons, so the last two
    colon-separated fields are the partition and the offset.

    Raises:
        ValueError: not ``topic:partition:offset`` with a non-negative partition and offset.
    """
    topic, sep1, rest = text.rpartition(":")
    topic, sep2, partition = topic.rpartition(":")
    if not (sep1 and sep2 and topic and partition.isdigit() and rest.isdigit()):
        raise ValueError(f"not a dead-letter ID (expected <dlq-topic>:<partition>:<offset>): {text!r}")
    return topic, int(partition), int(rest)


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Letter:
    """One dead letter as read back from its topic."""

    record: Record
    error_class: str
    reason: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    dead_lettered_at: str | None
    worker_node_id: str | None

    @property
    def id(self) -> str:
        r = self.record
        return letter_id(r.topic, r.partition, r.offset)

    @property
    def source(self) -> str:
        """``topic[p]@offset`` of the original message, as the consumer's logs name it."""
        if self.source_topic is None:
            return "?"
        return f"{self.source_topic}[{self.source_partition}]@{self.source_offset}"

    @property
    def time(self) -> dt.datetime | None:
        """When it was dead-lettered: the record's Kafka timestamp, in local time."""
        ms = self.record.timestamp_ms
        return dt.datetime.fromtimestamp(ms / 1000).astimezone() if ms is not None else None

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        """The message's own headers, without the ones dicomflow added when dead-lettering it."""
        return [(k, v) for k, v in self.record.headers if k not in OWN_HEADERS]


def letter_from_record(record: Record) -> Letter:
    """Read dicomflow's headers of a dead-letter record (a record without them is class ``unknown``)."""
    h = {k: v.decode("utf-8", "replace") for k, v in record.headers}
    return Letter(
        record=record,
        error_class=h.get(HEADER_ERROR_CLASS, "unknown"),
        reason=h.get(HEADER_REASON, ""),
        source_topic=h.get(HEADER_SOURCE_TOPIC),
        source_partition=_int(h.get(HEADER_SOURCE_PARTITION)),
        source_offset=_int(h.get(HEADER_SOURCE_OFFSET)),
        dead_lettered_at=h.get(HEADER_TIME),
        worker_node_id=h.get(HEADER_NODE),
    )


__all__ = [
    "HEADER_ERROR_CLASS",
    "HEADER_NODE",
    "HEADER_REASON",
    "HEADER_REDRIVEN_FROM",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_TIME",
    "OWN_HEADERS",
    "Letter",
    "letter_from_record",
    "letter_id",
    "parse_letter_id",
]
