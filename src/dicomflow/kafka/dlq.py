"""The dead-letter record format, shared by every consumer that dead-letters (the pipeline, the image workers).

A dead-lettered message keeps its original key and bytes untouched (so it
can be replayed once the cause is fixed) and its original headers; dicomflow
adds the headers below saying what went wrong and where the message came
from. ``<topic>.dlq`` receives it.

=============================  ===============================================
``dicomflow.error.class``      stable short name (``wire-format``, ``file-missing`` ...)
``dicomflow.error.reason``     human-readable reason (at most 1,000 bytes of UTF-8)
``dicomflow.source.topic``     topic the message was consumed from
``dicomflow.source.partition`` its partition (decimal)
``dicomflow.source.offset``    its offset (decimal)
``dicomflow.dead_lettered_at`` local time, ``YYYY-MM-DDTHH:MM:SS.ffffff``
``dicomflow.worker_node_id``   the process that dead-lettered it
=============================  ===============================================
"""

from __future__ import annotations

import datetime as dt

from dicomflow.kafka.consumer import Record
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

RawMessage = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]


def dead_letter_headers(
    record: Record, error_class: str, reason: str, *, node_id: str, when: dt.datetime | None = None
) -> list[tuple[str, bytes]]:
    """The record's own headers (ours removed) followed by ours."""
    at = (when or now()).isoformat(timespec="microseconds")
    kept = [(k, v) for k, v in record.headers if k not in OWN_HEADERS]
    return kept + [
        (HEADER_ERROR_CLASS, error_class.encode()),
        (HEADER_REASON, truncate_utf8(reason, REASON_MAX_BYTES).encode("utf-8", "replace")),
        (HEADER_SOURCE_TOPIC, record.topic.encode("utf-8")),
        (HEADER_SOURCE_PARTITION, str(record.partition).encode()),
        (HEADER_SOURCE_OFFSET, str(record.offset).encode()),
        (HEADER_TIME, at.encode()),
        (HEADER_NODE, node_id.encode("utf-8")),
    ]


def dead_letter_message(
    record: Record, error_class: str, reason: str, *, node_id: str, when: dt.datetime | None = None
) -> RawMessage:
    """(key, value, headers) of ``record``'s dead letter, for ``Publisher.send_raw``."""
    return (record.key, record.value or b"", dead_letter_headers(record, error_class, reason, node_id=node_id, when=when))


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
    "dead_letter_headers",
    "dead_letter_message",
]
