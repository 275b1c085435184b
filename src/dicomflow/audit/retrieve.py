"""Audit events of a DIMSE retrieve (C-MOVE, C-GET) answered by the archive (PS3.15 A.5.3.3, A.5.3.5).

- 110102 Begin Transferring DICOM Instances, action E: a retrieve starts sending;
- 110104 DICOM Instances Transferred, action R: what it sent, one event per study,
  a failure the same event with a non-zero outcome and its description.

Participants: this archive (source, its AE title), the destination (the Move
Destination's AE, or the C-GET requestor itself) and, for C-MOVE, the
requestor that asked (its calling AE, address and user identity).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from dicomflow.audit.events import INSTANCES_TRANSFERRED, SUCCESS, Outcome
from dicomflow.audit.participants import DESTINATION_ROLE, SOURCE_ROLE, access_point_type, application, study_objects
from dicomflow.models import ActiveParticipant, AuditEvent, CodedValue, now

BEGIN_TRANSFERRING = CodedValue(code="110102", meaning="Begin Transferring DICOM Instances")


@dataclass(frozen=True)
class RetrieveParties:
    """Who takes part in one retrieve."""

    node_id: str
    archive_ae: str
    requestor_ae: str
    requestor_address: str | None
    destination_ae: str
    destination_address: str | None
    user: str | None = None


def _participants(p: RetrieveParties) -> list[ActiveParticipant]:
    out = [application(p.node_id, p.archive_ae, SOURCE_ROLE, False, None),
           application(p.destination_ae or "unknown", p.destination_ae, DESTINATION_ROLE, p.destination_ae == p.requestor_ae,
              p.destination_address)]
    if p.requestor_ae != p.destination_ae or p.user:
        requestor = ActiveParticipant(
            user_id=p.requestor_ae or "unknown", alternative_user_id=f"AETITLES={p.requestor_ae}",
            user_is_requestor=True, network_access_point_id=p.requestor_address,
            network_access_point_type=access_point_type(p.requestor_address),
        )
        requestor.user_name = p.user
        out.append(requestor)
    return out


def begin_transferring(*, parties: RetrieveParties, tenant_id: str, service: str, study_uids: Sequence[str],
                       instance_count: int, when: dt.datetime | None = None) -> AuditEvent:
    """Begin Transferring DICOM Instances (110102): ``service`` (C-MOVE / C-GET) starts sending ``instance_count``."""
    details = {"service": service, "instance_count": str(instance_count)}
    return AuditEvent(
        event_id=BEGIN_TRANSFERRING, event_action="E", event_date_time=when or now(), event_outcome=SUCCESS,
        tenant_id=tenant_id, audit_source_id=parties.node_id, active_participants=_participants(parties),
        participant_objects=[obj for uid in study_uids for obj in study_objects(uid, details, None)],
    )


def instances_sent(*, parties: RetrieveParties, tenant_id: str, service: str, study_uid: str, patient_id: str | None,
                   sent: int, failed_uids: Sequence[str] = (), sop_classes: Sequence[str] = (),
                   outcome: Outcome = SUCCESS, outcome_description: str | None = None,
                   when: dt.datetime | None = None) -> AuditEvent:
    """DICOM Instances Transferred (110104, action R): what one retrieve sent of one study, and what failed."""
    details = {"service": service, "instance_count": str(sent)}
    if failed_uids:
        details["failed_sop_instance_uids"] = "\\".join(failed_uids)
    if sop_classes:
        details["sop_classes"] = "\\".join(sorted(set(sop_classes)))
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED, event_action="R", event_date_time=when or now(), event_outcome=outcome,
        event_outcome_description=outcome_description, tenant_id=tenant_id, audit_source_id=parties.node_id,
        active_participants=_participants(parties), participant_objects=study_objects(study_uid, details, patient_id),
    )


__all__ = ["BEGIN_TRANSFERRING", "RetrieveParties", "begin_transferring", "instances_sent"]
