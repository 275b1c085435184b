"""Dead-letter records: the original message plus why it could not be processed.

A dead-lettered message keeps its original key and bytes untouched (so it
can be replayed once the cause is fixed, e.g. a file restored) and its
original headers; dicomflow adds headers saying what went wrong and where
the message came from:

=============================  ===============================================
``dicomflow.error.class``      stable short name (``wire-format``, ``file-missing`` ...)
``dicomflow.error.reason``     human-readable reason (at most 1,000 bytes of UTF-8)
``dicomflow.source.topic``     topic the message was consumed from
``dicomflow.source.partition`` its partition (decimal)
``dicomflow.source.offset``    its offset (decimal)
``dicomflow.dead_lettered_at`` local time, ``YYYY-MM-DDTHH:MM:SS.ffffff``
``dicomflow.worker_node_id``   the consumer that dead-lettered it
=============================  ===============================================

Shared by every stage that dead-letters (the consumer, the warehouse sink,
the image workers), which add their own audit events, and by the operator's
tools (:mod:`dicomflow.dlq`) that list, show and re-drive the letters.

What every loop dead-letters is a :class:`Poison` (the record, a stable
error class, the reason); :class:`DeadLetters` collects one batch's letters
and audit events and publishes them, each topic acknowledged once, so a
retry after a failed publish re-sends the very same letters and skips what
Kafka already acknowledged.

A letter is named by its own coordinates in the dead-letter topic,
``<dlq-topic>:<partition>:<offset>`` (:func:`letter_id`): unique, stable,
and enough to read it back.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from dicomflow.kafka.records import Record
from dicomflow.models import AuditEvent, now, truncate_utf8

if TYPE_CHECKING:  # only types: the parse workers import Poison and must not load the Kafka client
    from dicomflow.kafka.delivery import BatchResult

HEADER_ERROR_CLASS = "dicomflow.error.class"
HEADER_REASON = "dicomflow.error.reason"
HEADER_SOURCE_TOPIC = "dicomflow.source.topic"
HEADER_SOURCE_PARTITION = "dicomflow.source.partition"
HEADER_SOURCE_OFFSET = "dicomflow.source.offset"
HEADER_TIME = "dicomflow.dead_lettered_at"
HEADER_NODE = "dicomflow.worker_node_id"
#: Set on a re-driven message: the letter it was re-driven from.
HEADER_REDRIVEN_FROM = "dicomflow.redriven_from"

#: Our headers; an original header of the same name is replaced, not repeated.
OWN_HEADERS = frozenset(
    {HEADER_ERROR_CLASS, HEADER_REASON, HEADER_SOURCE_TOPIC, HEADER_SOURCE_PARTITION, HEADER_SOURCE_OFFSET, HEADER_TIME, HEADER_NODE}
)
REASON_MAX_BYTES = 1000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message for the dead-letter topic, ready for ``Publisher.send_raw``."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    def as_raw(self) -> tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]:
        """The (key, value, headers) tuple ``send_raw`` takes."""
        return (self.key, self.value, self.headers)


def dead_letter_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``: ``<topic>.dlq``."""
    return f"{topic}.dlq"


def dead_letter_record(
    r: Record, error_class: str, reason: str, *, node_id: str, when: dt.datetime | None = None
) -> DeadLetter:
    """The DLQ message for record ``r``: original key, bytes and headers, plus ours."""
    at = (when or now()).isoformat(timespec="microseconds")
    kept = [(k, v) for k, v in r.headers if k not in OWN_HEADERS]
    ours = [
        (HEADER_ERROR_CLASS, error_class.encode()),
        (HEADER_REASON, truncate_utf8(reason, REASON_MAX_BYTES).encode("utf-8", "replace")),
        (HEADER_SOURCE_TOPIC, r.topic.encode("utf-8")),
        (HEADER_SOURCE_PARTITION, str(r.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(r.offset).encode()),
        (HEADER_TIME, at.encode()),
        (HEADER_NODE, node_id.encode("utf-8")),
    ]
    return DeadLetter(key=r.key, value=r.value or b"", headers=kept + ours)


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can never be processed, and why: it goes to the dead-letter topic."""

    record: Record
    #: Stable short name for the ``dicomflow.error.class`` header (``wire-format`` ...).
    error_class: str
    reason: str

    def letter(self, *, node_id: str, when: dt.datetime | None = None) -> DeadLetter:
        """The DLQ message: original key, bytes and headers, plus ours."""
        return dead_letter_record(self.record, self.error_class, self.reason, node_id=node_id, when=when)


class DeadLetterPublisher(Protocol):
    """Where dead letters and their audit events go (``dicomflow.kafka.producer.Publisher``)."""

    def send_raw(
        self,
        topic: str,
        items: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]],
        timeout_s: float | None = None,
    ) -> BatchResult: ...

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult: ...


#: The stage name of the audit events in :attr:`DeadLetters.sent`.
AUDIT_STAGE = "audit"


class DeadLetters:
    """One batch's dead letters (by topic) and their audit events, built once, published once.

    :meth:`publish` sends each topic's letters, then the audit events, each
    stage waiting for Kafka's acknowledgement; a stage acknowledged is
    remembered in :attr:`sent`, so a retry after a failure re-sends only
    what is missing (the same letters, with the same headers and time).
    """

    def __init__(self) -> None:
        self.letters: dict[str, list[DeadLetter]] = {}
        self.audits: list[AuditEvent] = []
        #: Topics (and :data:`AUDIT_STAGE`) whose messages Kafka acknowledged.
        self.sent: set[str] = set()

    def __len__(self) -> int:
        return sum(len(v) for v in self.letters.values())

    def add(self, topic: str, letter: DeadLetter, audit: AuditEvent | None = None) -> None:
        """One more letter for ``topic`` (and the audit event that says so, when there is one)."""
        self.letters.setdefault(topic, []).append(letter)
        if audit is not None:
            self.audits.append(audit)

    def publish(self, publisher: DeadLetterPublisher, timeout_s: float | None = None) -> None:
        """Send what is not acknowledged yet: letters per topic, then the audit events.

        Raises:
            PublishError: Kafka did not acknowledge some message (a
                :class:`~dicomflow.kafka.exceptions.DeliveryError`); retry later.
        """
        for topic, letters in self.letters.items():
            if topic not in self.sent:
                publisher.send_raw(topic, [d.as_raw() for d in letters], timeout_s=timeout_s).raise_for_failures()
                self.sent.add(topic)
        if self.audits and AUDIT_STAGE not in self.sent:
            publisher.send_audit(self.audits, timeout_s=timeout_s).raise_for_failures()
            self.sent.add(AUDIT_STAGE)


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as text, last one wins (for readers and tests)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or [])}


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
    "AUDIT_STAGE",
    "HEADER_ERROR_CLASS",
    "HEADER_NODE",
    "HEADER_REASON",
    "HEADER_REDRIVEN_FROM",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_TIME",
    "OWN_HEADERS",
    "REASON_MAX_BYTES",
    "DeadLetter",
    "DeadLetterPublisher",
    "DeadLetters",
    "Letter",
    "Poison",
    "dead_letter_record",
    "dead_letter_topic",
    "headers_dict",
    "letter_from_record",
    "letter_id",
    "parse_letter_id",
]
