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

Shared by every stage that dead-letters (the consumer, the warehouse sink):
the stages add their own audit events.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dicomflow.kafka.records import Record
from dicomflow.models import now, truncate_utf8

HEADER_ERROR_CLASS = "dicomflow.error.class"
HEADER_REASON = "dicomflow.error.reason"
HEADER_SOURCE_TOPIC = "dicomflow.source.topic"
HEADER_SOURCE_PARTITION = "dicomflow.source.partition"
HEADER_SOURCE_OFFSET = "dicomflow.source.offset"
HEADER_TIME = "dicomflow.dead_lettered_at"
HEADER_NODE = "dicomflow.worker_node_id"

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


def headers_dict(headers: list[tuple[str, bytes]] | None) -> dict[str, str]:
    """Headers as text, last one wins (for readers and tests)."""
    return {k: v.decode("utf-8", "replace") for k, v in (headers or [])}


__all__ = [
    "HEADER_ERROR_CLASS",
    "HEADER_NODE",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_TIME",
    "OWN_HEADERS",
    "REASON_MAX_BYTES",
    "DeadLetter",
    "dead_letter_record",
    "dead_letter_topic",
    "headers_dict",
]
