"""The audit event of a C-FIND (PS3.15 A.5.3.11 Query, event 110112, action E).

The requestor (the calling AE, its address and user identity) is the source,
this archive the destination; the participant object is the SOP class of the
query (110181), with the identifier in ``details["query"]`` (base64, as
ParticipantObjectQuery carries it), its transfer syntax, the number of
matches answered and the final status.
"""

from __future__ import annotations

import base64
import datetime as dt

from dicomflow.audit.events import SOP_UID_TYPE, SUCCESS, Outcome
from dicomflow.audit.participants import DESTINATION_ROLE, requestor
from dicomflow.models import ActiveParticipant, AuditEvent, CodedValue, ParticipantObject, now

QUERY = CodedValue(code="110112", meaning="Query")


def dimse_query(
    *,
    node_id: str,
    tenant_id: str,
    ae_title: str,
    calling_ae: str,
    calling_address: str | None,
    user: str | None,
    sop_class_uid: str,
    identifier: bytes,
    transfer_syntax: str,
    results: int,
    status: int,
    outcome: Outcome = SUCCESS,
    outcome_description: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """Query (110112): one C-FIND, whatever its outcome."""
    caller = requestor(calling_ae, calling_address, user)
    archive = ActiveParticipant(user_id=node_id, alternative_user_id=f"AETITLES={ae_title}", user_is_requestor=False,
                                role_id=DESTINATION_ROLE)
    return AuditEvent(
        event_id=QUERY,
        event_action="E",
        event_date_time=when or now(),
        event_outcome=outcome,
        event_outcome_description=outcome_description,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[caller, archive],
        participant_objects=[ParticipantObject(
            object_id=sop_class_uid, id_type=SOP_UID_TYPE, type_code=2, type_code_role=3,
            details={"query": base64.b64encode(identifier).decode("ascii"), "transfer_syntax": transfer_syntax,
                     "results": str(results), "status": f"0x{status:04X}"},
        )],
    )


__all__ = ["QUERY", "dimse_query"]
