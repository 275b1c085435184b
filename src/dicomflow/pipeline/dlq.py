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

The header names live in :mod:`dicomflow.kafka.deadletter`, shared with the
operator's tools (``dicomflow dlq``) that read the letters back.

Each dead letter also gets an audit event (:func:`audit_event`) so the audit
trail says that an instance was received but not indexed, and why.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import msgspec

from dicomflow.audit.events import dead_lettered
from dicomflow.kafka.deadletter import (
    HEADER_ERROR_CLASS,
    HEADER_NODE,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TIME,
    OWN_HEADERS,
)
from dicomflow.models import AuditEvent, now, truncate_utf8
from dicomflow.pipeline.types import Poison

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


def dead_letter(poison: Poison, *, node_id: str, when: dt.datetime | None = None) -> DeadLetter:
    """The DLQ message for ``poison``: original key, bytes and headers, plus ours."""
    r = poison.record
    at = (when or now()).isoformat(timespec="microseconds")
    kept = [(k, v) for k, v in r.headers if k not in OWN_HEADERS]
    ours = [
        (HEADER_ERROR_CLASS, poison.error_class.encode()),
        (HEADER_REASON, truncate_utf8(poison.reason, REASON_MAX_BYTES).encode("utf-8", "replace")),
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


class _Partial(msgspec.Struct):
    """The fields an audit event wants, read leniently from a store event that failed validation."""

    tenant_id: str | None = None
    study_uid: str | None = None
    sop_uid: str | None = None
    file_path: str | None = None


_partial_decoder = msgspec.json.Decoder(_Partial)


def _context(poison: Poison) -> _Partial:
    """Best-effort tenant / study / SOP / file of a poison message, for its audit event."""
    if poison.event is not None:
        e = poison.event
        return _Partial(e.tenant_id, e.study_uid, e.sop_uid, e.file_path)
    try:
        return _partial_decoder.decode(poison.record.value or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _Partial()


def audit_event(poison: Poison, *, node_id: str, default_tenant: str, when: dt.datetime | None = None) -> AuditEvent:
    """The audit event saying this message was dead-lettered (outcome: serious failure)."""
    ctx = _context(poison)
    return dead_lettered(
        node_id=node_id,
        tenant_id=truncate_utf8(ctx.tenant_id, 64) if ctx.tenant_id else default_tenant,
        source=poison.record.source,
        error_class=poison.error_class,
        reason=poison.reason,
        file_path=ctx.file_path,
        study_uid=ctx.study_uid,
        sop_uid=ctx.sop_uid,
        when=when,
    )


__all__ = [
    "HEADER_ERROR_CLASS",
    "HEADER_NODE",
    "HEADER_REASON",
    "HEADER_SOURCE_OFFSET",
    "HEADER_SOURCE_PARTITION",
    "HEADER_SOURCE_TOPIC",
    "HEADER_TIME",
    "DeadLetter",
    "audit_event",
    "dead_letter",
    "headers_dict",
]
