"""Builders for DICOM PS3.15-style audit events (published on audit_queue as JSON).

The codes are those of DICOM PS3.15 Annex A.5 / PS3.16 (DCM coding scheme):

- 110100 Application Activity, type 110120 Application Start / 110121 Application Stop;
- 110104 DICOM Instances Transferred (action C create when an archive receives);
- 110180 Study Instance UID as participant object ID type; 110181 SOP Class UID;
- roles 110153 Source Role ID, 110152 Destination Role ID, 110150 Application,
  110151 Application Launcher.

Outcome indicators: 0 success, 4 minor failure, 8 serious failure, 12 major failure.
Audit events may carry PHI (patient IDs): they go to the audit topic only, never
to info-level logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

from dicomflow.audit.participants import (
    APPLICATION_ROLE,
    DESTINATION_ROLE,
    STUDY_UID_TYPE,
    access_point_type,
)
from dicomflow.audit.participants import application as _application
from dicomflow.audit.participants import requestor as _requestor
from dicomflow.models import ActiveParticipant, AuditEvent, CodedValue, ParticipantObject, now

Outcome = Literal[0, 4, 8, 12]
SUCCESS: Outcome = 0
MINOR_FAILURE: Outcome = 4
SERIOUS_FAILURE: Outcome = 8
MAJOR_FAILURE: Outcome = 12

APPLICATION_ACTIVITY = CodedValue(code="110100", meaning="Application Activity")
APPLICATION_START = CodedValue(code="110120", meaning="Application Start")
APPLICATION_STOP = CodedValue(code="110121", meaning="Application Stop")
INSTANCES_TRANSFERRED = CodedValue(code="110104", meaning="DICOM Instances Transferred")
#: dicomflow's own event type for a message moved to the dead-letter topic.
DEAD_LETTERED = CodedValue(code="DLQ", scheme="99DICOMFLOW", meaning="Message Dead-Lettered")
#: dicomflow's own event type for a dead letter published back to its source topic.
REDRIVEN = CodedValue(code="REDRIVE", scheme="99DICOMFLOW", meaning="Dead Letter Re-Driven")
FILE_TYPE = CodedValue(code="12", scheme="RFC-3881", meaning="URI")

def application_activity(
    *,
    started: bool,
    node_id: str,
    tenant_id: str,
    application: str,
    ae_title: str | None = None,
    address: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """Application Activity (110100): a dicomflow service started or stopped."""
    return AuditEvent(
        event_id=APPLICATION_ACTIVITY,
        event_type=[APPLICATION_START if started else APPLICATION_STOP],
        event_action="E",
        event_date_time=when or now(),
        event_outcome=SUCCESS,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[_application(f"{node_id}/{application}", ae_title, APPLICATION_ROLE, False, address)],
    )


def instances_transferred(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    instance_count: int,
    sop_classes: Sequence[str] = (),
    patient_id: str | None = None,
    source_ae: str | None = None,
    source_address: str | None = None,
    source_user: str | None = None,
    destination_ae: str | None = None,
    destination_address: str | None = None,
    outcome: Outcome = SUCCESS,
    outcome_description: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Transferred (110104), one per study per association (action C).

    A failure is the same event with a non-zero outcome and its description.
    ``source_user`` is the username the sender's user identity named (the
    requestor participant's user name).
    """
    details = {"instance_count": str(instance_count)}
    if sop_classes:
        details["sop_classes"] = "\\".join(sorted(set(sop_classes)))
    objects = [
        ParticipantObject(object_id=study_uid, id_type=STUDY_UID_TYPE, type_code=2, type_code_role=3, details=details)
    ]
    if patient_id is not None:
        objects.append(
            ParticipantObject(
                object_id=patient_id, id_type=CodedValue(code="2", scheme="RFC-3881", meaning="Patient Number"),
                type_code=1, type_code_role=1,
            )
        )
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED,
        event_action="C",
        event_date_time=when or now(),
        event_outcome=outcome,
        event_outcome_description=outcome_description,
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            _requestor(source_ae, source_address, source_user),
            _application(node_id, destination_ae, DESTINATION_ROLE, False, destination_address),
        ],
        participant_objects=objects,
    )


def dead_lettered(
    *,
    node_id: str,
    tenant_id: str,
    source: str,
    error_class: str,
    reason: str,
    file_path: str | None = None,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """A store event could not be processed and went to the dead-letter topic.

    ``source`` names the message (``storage_queue[2]@1234``). Outcome 8
    (serious failure): the instance is not indexed until someone acts.
    """
    details = {"source": source, "error_class": error_class}
    if sop_uid:
        details["sop_uid"] = sop_uid
    objects: list[ParticipantObject] = []
    if study_uid:
        objects.append(ParticipantObject(object_id=study_uid, id_type=STUDY_UID_TYPE, details=details))
    if file_path:
        objects.append(ParticipantObject(object_id=file_path, id_type=FILE_TYPE, details=details))
    if not objects:
        message = CodedValue(code="MSG", scheme="99DICOMFLOW", meaning="Kafka message")
        objects.append(ParticipantObject(object_id=source, id_type=message, details=details))
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED,
        event_type=[DEAD_LETTERED],
        event_action="C",
        event_date_time=when or now(),
        event_outcome=SERIOUS_FAILURE,
        event_outcome_description=reason[:1024],
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[_application(node_id, None, APPLICATION_ROLE, False, None)],
        participant_objects=objects,
    )


def redriven(
    *,
    node_id: str,
    tenant_id: str,
    letter: str,
    source: str,
    target: str,
    error_class: str,
    operator: str | None = None,
    study_uid: str | None = None,
    sop_uid: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """A dead letter (``letter``: its ``<dlq-topic>:<partition>:<offset>``) was published back to ``target``.

    Outcome 0: the message is back in the pipeline; whether it is indexed
    this time is for the consumer to say (another dead letter if not).
    """
    details = {"letter": letter, "source": source, "target_topic": target, "error_class": error_class}
    if sop_uid:
        details["sop_uid"] = sop_uid
    message = CodedValue(code="MSG", scheme="99DICOMFLOW", meaning="Kafka message")
    objects = [ParticipantObject(object_id=letter, id_type=message, details=details)]
    if study_uid:
        objects.append(ParticipantObject(object_id=study_uid, id_type=STUDY_UID_TYPE, details=details))
    participants = [_application(node_id, None, APPLICATION_ROLE, operator is None, None)]
    if operator:
        participants.insert(0, ActiveParticipant(user_id=operator, user_is_requestor=True))
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED,
        event_type=[REDRIVEN],
        event_action="U",
        event_date_time=when or now(),
        event_outcome=SUCCESS,
        event_outcome_description=f"re-driven from {letter} to {target}",
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=participants,
        participant_objects=objects,
    )


USER_AUTHENTICATION = CodedValue(code="110114", meaning="User Authentication")
LOGIN = CodedValue(code="110122", meaning="Login")


def association_rejected(
    *,
    node_id: str,
    tenant_id: str,
    calling_ae: str,
    calling_address: str | None,
    called_ae: str,
    called_address: str | None = None,
    reason: str,
    user: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """User Authentication (110114) / Login (110122) failed: a DICOM peer was refused an association.

    Outcome 4 (minor failure): nothing was received; the peer may be
    misconfigured or not allowed (``receiver.allowed_calling_aes``).
    """
    return AuditEvent(
        event_id=USER_AUTHENTICATION,
        event_type=[LOGIN],
        event_action="E",
        event_date_time=when or now(),
        event_outcome=MINOR_FAILURE,
        event_outcome_description=reason[:1024],
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            _requestor(calling_ae, calling_address, user),
            _application(node_id, called_ae, DESTINATION_ROLE, False, called_address),
        ],
    )


#: dicomflow's own event type: an instance arrived whose SOP Instance UID is stored with other content.
DUPLICATE_INSTANCE = CodedValue(code="DUP", scheme="99DICOMFLOW", meaning="Duplicate SOP Instance")
SOP_UID_TYPE = CodedValue(code="110181", meaning="SOP Class UID")


def duplicate_instance(
    *,
    node_id: str,
    tenant_id: str,
    study_uid: str,
    sop_uid: str,
    sop_class_uid: str,
    decision: str,
    file_path: str,
    stored_size: int | None,
    received_size: int,
    source_ae: str | None = None,
    source_address: str | None = None,
    source_user: str | None = None,
    destination_ae: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """DICOM Instances Transferred (110104) / Duplicate SOP Instance: a different copy of a stored instance arrived.

    ``decision`` is what ``ingest.duplicates`` made of it: ``rejected``
    (outcome 4, the sender got a failure), ``kept`` (the stored copy stays),
    ``replaced`` (action U: the new copy took its place).
    """
    details = {"sop_uid": sop_uid, "sop_classes": sop_class_uid, "decision": decision,
               "file_path": file_path, "received_size": str(received_size)}
    if stored_size is not None:
        details["stored_size"] = str(stored_size)
    return AuditEvent(
        event_id=INSTANCES_TRANSFERRED,
        event_type=[DUPLICATE_INSTANCE],
        event_action="U" if decision == "replaced" else "C",
        event_date_time=when or now(),
        event_outcome=MINOR_FAILURE if decision == "rejected" else SUCCESS,
        event_outcome_description=f"SOP Instance UID {sop_uid} already stored with other content: {decision}",
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            _requestor(source_ae, source_address, source_user),
            _application(node_id, destination_ae, DESTINATION_ROLE, False, None),
        ],
        participant_objects=[ParticipantObject(object_id=study_uid, id_type=STUDY_UID_TYPE, type_code=2,
                                               type_code_role=3, details=details)],
    )


SECURITY_ALERT = CodedValue(code="110113", meaning="Security Alert")
NODE_AUTHENTICATION = CodedValue(code="110126", meaning="Node Authentication")
NODE_ID_TYPE = CodedValue(code="110182", meaning="Node ID")
#: RFC 3881 participant object role 13: security resource.
_SECURITY_RESOURCE = 13


def security_alert(
    *,
    node_id: str,
    tenant_id: str,
    peer_address: str | None,
    reason: str,
    kind: str,
    ae_title: str | None = None,
    local_address: str | None = None,
    when: dt.datetime | None = None,
) -> AuditEvent:
    """Security Alert (110113) / Node Authentication (110126): a peer failed to authenticate as a node.

    Used when a connection on a TLS listener is refused (plain TCP, no or an
    untrusted client certificate, a handshake that fails or stalls). The
    alert subject is the peer node; ``kind`` is the classified reason
    (``not-tls``, ``untrusted-certificate`` ...). Outcome 4: refused, nothing received.
    """
    return AuditEvent(
        event_id=SECURITY_ALERT,
        event_type=[NODE_AUTHENTICATION],
        event_action="E",
        event_date_time=when or now(),
        event_outcome=MINOR_FAILURE,
        event_outcome_description=reason[:1024],
        tenant_id=tenant_id,
        audit_source_id=node_id,
        active_participants=[
            _application(node_id, ae_title, APPLICATION_ROLE, False, local_address),
            ActiveParticipant(user_id=peer_address or "unknown", user_is_requestor=True,
                              network_access_point_id=peer_address,
                              network_access_point_type=access_point_type(peer_address)),
        ],
        participant_objects=[ParticipantObject(
            object_id=peer_address or "unknown", id_type=NODE_ID_TYPE, type_code=2,
            type_code_role=_SECURITY_RESOURCE, details={"kind": kind},
        )],
    )


__all__ = [
    "MAJOR_FAILURE",
    "MINOR_FAILURE",
    "SERIOUS_FAILURE",
    "SUCCESS",
    "Outcome",
    "application_activity",
    "association_rejected",
    "dead_lettered",
    "duplicate_instance",
    "instances_transferred",
    "redriven",
    "security_alert",
]
