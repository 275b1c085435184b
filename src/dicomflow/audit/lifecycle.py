"""Audit events of the data lifecycle: a study, series or instance deleted (PS3.15 A.5.3.2).

110103 DICOM Instances Accessed with action D (delete), as PS3.15 codes a
deletion; the requesting user is whoever deleted (a token's subject over
DICOMweb, the operating-system user of ``dicomflow delete``), the
participant object the study, its details what was deleted and how many
instances. A restore (``dicomflow undelete``) is the same event with action C
(create): the index entries come back.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from dicomflow.audit.dicomweb import INSTANCES_ACCESSED
from dicomflow.audit.events import SUCCESS, Outcome
from dicomflow.audit.participants import SOURCE_ROLE, STUDY_UID_TYPE, requesting_user
from dicomflow.models import ActiveParticipant, AuditEvent, ParticipantObject, now


def instances_deleted(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    instance_count: int,
    user: str,
    user_address: str | None,
    resource: str,
    outcome: Outcome = SUCCESS,
    outcome_description: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Accessed (110103, action D): ``user`` deleted ``resource`` (instance_count instances)."""
    return AuditEvent(
        event_id=INSTANCES_ACCESSED,
        event_action="D",
        event_date_time=when or now(),
        event_outcome=outcome,
        event_outcome_description=outcome_description,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            requesting_user(user, user_address, SOURCE_ROLE),
            ActiveParticipant(user_id=node_id, user_is_requestor=False),
        ],
        participant_objects=[ParticipantObject(
            object_id=study_uid, id_type=STUDY_UID_TYPE, type_code=2, type_code_role=3,
            details={"instance_count": str(instance_count), "resource": resource},
        )],
    )


def instances_restored(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    instance_count: int,
    user: str,
    resource: str,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Accessed (110103, action C): ``user`` restored deleted ``resource`` before its purge."""
    deleted = instances_deleted(node_id=node_id, tenant_id=tenant_id, study_uid=study_uid,
                                instance_count=instance_count, user=user, user_address=None, resource=resource,
                                when=when)
    return msgspec.structs.replace(deleted, event_action="C")


__all__ = ["instances_deleted", "instances_restored"]
