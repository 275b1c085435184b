"""Dead letters of the consumer: the shared record format plus the store event's audit event.

The DLQ message format (original key, bytes and headers, plus the
``dicomflow.error.*`` / ``dicomflow.source.*`` headers) lives in
:mod:`dicomflow.kafka.dlq`, shared with the warehouse sink; this module adapts a
:class:`~dicomflow.pipeline.types.Poison` to it and builds the audit event
that says an instance was received but not indexed, and why.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from dicomflow.audit.events import dead_lettered
from dicomflow.kafka.dlq import (
    HEADER_ERROR_CLASS,
    HEADER_NODE,
    HEADER_REASON,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    HEADER_TIME,
    OWN_HEADERS,
    REASON_MAX_BYTES,
    DeadLetter,
    dead_letter_record,
    headers_dict,
)
from dicomflow.models import AuditEvent, truncate_utf8
from dicomflow.pipeline.types import Poison


def dead_letter(poison: Poison, *, node_id: str, when: dt.datetime | None = None) -> DeadLetter:
    """The DLQ message for ``poison``: original key, bytes and headers, plus ours."""
    return dead_letter_record(poison.record, poison.error_class, poison.reason, node_id=node_id, when=when)


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
    "OWN_HEADERS",
    "REASON_MAX_BYTES",
    "DeadLetter",
    "audit_event",
    "dead_letter",
    "headers_dict",
]
