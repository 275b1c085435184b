"""The audit event of a dead letter, built from whatever the refused message still says.

A message goes to a dead-letter topic because it cannot be used, so its
payload is read leniently here: the tenant, study, SOP instance and file are
taken when they are there and of the right type, and ignored otherwise. The
consumer and the warehouse sink both build their dead letters' audit events
with :func:`dead_letter_audit`; ``dlq redrive`` reads its audit context with
:func:`message_context` too.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from dicomflow.audit.events import dead_lettered
from dicomflow.models import AuditEvent, truncate_utf8


class MessageContext(msgspec.Struct):
    """The fields an audit event wants, from a payload that failed validation (each may be missing)."""

    tenant_id: str | None = None
    study_uid: str | None = None
    sop_uid: str | None = None
    file_path: str | None = None


_lenient = msgspec.json.Decoder(MessageContext)


def message_context(payload: bytes | None) -> MessageContext:
    """Best-effort tenant / study / SOP / file of a JSON payload (all None when it is not a JSON object of them)."""
    try:
        return _lenient.decode(payload or b"")
    except (msgspec.DecodeError, msgspec.ValidationError):
        return MessageContext()


def dead_letter_audit(
    *,
    node_id: str,
    default_tenant: str,
    source: str,
    error_class: str,
    reason: str,
    context: MessageContext,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """The audit event saying the message ``source`` was dead-lettered (outcome: serious failure)."""
    return dead_lettered(
        node_id=node_id,
        tenant_id=truncate_utf8(context.tenant_id, 64) if context.tenant_id else default_tenant,
        source=source,
        error_class=error_class,
        reason=reason,
        file_path=context.file_path,
        study_uid=context.study_uid,
        sop_uid=context.sop_uid,
        when=when,
    )


__all__ = ["MessageContext", "dead_letter_audit", "message_context"]
