"""Dead letters of the consumer: the shared record format plus the store event's audit event.

The DLQ message format (original key, bytes and headers, plus the
``dicomflow.error.*`` / ``dicomflow.source.*`` headers) lives in
:mod:`dicomflow.kafka.dlq`, shared with the warehouse sink; this module adapts a
:class:`~dicomflow.pipeline.types.Poison` to it and builds the audit event
that says an instance was received but not indexed, and why.
"""

from __future__ import annotations

import datetime as dt

from dicomflow.audit.dead_letters import MessageContext, dead_letter_audit, message_context
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
from dicomflow.models import AuditEvent
from dicomflow.pipeline.types import Poison


def dead_letter(poison: Poison, *, node_id: str, when: dt.datetime | None = None) -> DeadLetter:
    """The DLQ message for ``poison``: original key, bytes and headers, plus ours."""
    return dead_letter_record(poison.record, poison.error_class, poison.reason, node_id=node_id, when=when)


def audit_event(poison: Poison, *, node_id: str, default_tenant: str, when: dt.datetime | None = None) -> AuditEvent:
    """The audit event saying this message was dead-lettered (outcome: serious failure)."""
    if poison.event is not None:
        e = poison.event
        context = MessageContext(e.tenant_id, e.study_uid, e.sop_uid, e.file_path)
    else:
        context = message_context(poison.record.value)
    return dead_letter_audit(node_id=node_id, default_tenant=default_tenant, source=poison.record.source,
                             error_class=poison.error_class, reason=poison.reason, context=context, when=when)


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
