"""Audit events of the DICOMweb server: retrievals, accesses and searches (PS3.15 A.5.3).

- 110104 DICOM Instances Transferred, action R: instances retrieved (WADO-RS);
- 110103 DICOM Instances Accessed, action R: metadata, frames, rendered images;
- 110112 Query, action E: a QIDO-RS search, its query string the participant object.

The requesting user is the authenticated token's subject, with the client's
address; the archive (this node) is the other participant. Stored instances
(STOW-RS) are audited like C-STORE, by :func:`dicomflow.audit.events.instances_transferred`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from dicomflow.audit.events import INSTANCES_TRANSFERRED, SUCCESS, Outcome
from dicomflow.audit.participants import DESTINATION_ROLE, SOURCE_ROLE, requesting_user, study_objects
from dicomflow.models import ActiveParticipant, AuditEvent, CodedValue, ParticipantObject, now

INSTANCES_ACCESSED = CodedValue(code="110103", meaning="DICOM Instances Accessed")
QUERY = CodedValue(code="110112", meaning="Query")


def _archive(node_id: str, role: CodedValue) -> ActiveParticipant:
    """This node, the archive, in ``role``."""
    return ActiveParticipant(user_id=node_id, user_is_requestor=False, role_id=role)


def instances_retrieved(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    instance_count: int,
    user: str,
    user_address: str | None,
    resource: str,
    sop_classes: Sequence[str] = (),
    patient_id: str | None = None,
    outcome: Outcome = SUCCESS,
    outcome_description: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Transferred (110104, action R): a client retrieved instances (WADO-RS).

    The archive is the source, the authenticated user (the token's subject)
    the requesting destination; ``resource`` is the request path.
    """
    details = {"instance_count": str(instance_count), "resource": resource}
    if sop_classes:
        details["sop_classes"] = "\\".join(sorted(set(sop_classes)))
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED,
        event_action="R",
        event_date_time=when or now(),
        event_outcome=outcome,
        event_outcome_description=outcome_description,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            _archive(node_id, SOURCE_ROLE),
            requesting_user(user, user_address, DESTINATION_ROLE),
        ],
        participant_objects=study_objects(study_uid, details, patient_id),
    )


def instances_accessed(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    instance_count: int,
    user: str,
    user_address: str | None,
    resource: str,
    patient_id: str | None = None,
    outcome: Outcome = SUCCESS,
    outcome_description: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Accessed (110103, action R): metadata, frames or rendered images were read."""
    details = {"instance_count": str(instance_count), "resource": resource}
    return AuditEvent(
        event_id=INSTANCES_ACCESSED,
        event_action="R",
        event_date_time=when or now(),
        event_outcome=outcome,
        event_outcome_description=outcome_description,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[requesting_user(user, user_address, DESTINATION_ROLE)],
        participant_objects=study_objects(study_uid, details, patient_id),
    )


def query(
    *,
    node_id: str,
    tenant_id: str,
    user: str,
    user_address: str | None,
    resource: str,
    query_string: str,
    results: int,
    outcome: Outcome = SUCCESS,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """Query (110112, action E): a QIDO-RS search; the query string is the participant object."""
    return AuditEvent(
        event_id=QUERY,
        event_action="E",
        event_date_time=when or now(),
        event_outcome=outcome,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[requesting_user(user, user_address, SOURCE_ROLE),
                             _archive(node_id, DESTINATION_ROLE)],
        participant_objects=[ParticipantObject(
            object_id=resource, id_type=CodedValue(code="12", scheme="RFC-3881", meaning="URI"), type_code=2,
            type_code_role=24, details={"query": query_string, "results": str(results)},
        )],
    )


__all__ = ["INSTANCES_ACCESSED", "QUERY", "instances_accessed", "instances_retrieved", "query"]
