"""The participants every audit event is built from (PS3.15 A.5.2): roles, the archive or a peer application,
a requesting user, a study with its patient.

One definition of each for :mod:`.events` (DIMSE and ingest), :mod:`.dicomweb`, :mod:`.cfind`,
:mod:`.retrieve` and :mod:`.lifecycle`.
"""

from __future__ import annotations

from dicomflow.models import ActiveParticipant, CodedValue, ParticipantObject

SOURCE_ROLE = CodedValue(code="110153", meaning="Source Role ID")
DESTINATION_ROLE = CodedValue(code="110152", meaning="Destination Role ID")
APPLICATION_ROLE = CodedValue(code="110150", meaning="Application")
STUDY_UID_TYPE = CodedValue(code="110180", meaning="Study Instance UID")
PATIENT_ID_TYPE = CodedValue(code="2", scheme="RFC-3881", meaning="Patient Number")

#: Network access point type: 1 machine name, 2 IP address.
NAP_IP = 2


def access_point_type(address: str | None) -> int | None:
    """The network access point type of ``address``: an IP address, or none when there is no address."""
    return NAP_IP if address else None


def application(node_id: str, ae_title: str | None, role: CodedValue, requestor: bool,
                address: str | None) -> ActiveParticipant:
    """A DICOM application: its id, its AE title as the alternative user id, its role and address."""
    return ActiveParticipant(
        user_id=node_id,
        alternative_user_id=f"AETITLES={ae_title}" if ae_title else None,
        user_is_requestor=requestor,
        role_id=role,
        network_access_point_id=address,
        network_access_point_type=access_point_type(address),
    )


def requestor(ae_title: str | None, address: str | None, user: str | None) -> ActiveParticipant:
    """The calling side of an association: its AE title, and the username of its user identity as the user name."""
    participant = application(ae_title or "unknown", ae_title, SOURCE_ROLE, True, address)
    participant.user_name = user
    return participant


def requesting_user(user: str, address: str | None, role: CodedValue) -> ActiveParticipant:
    """An authenticated user (a token's subject, an operating-system user) at ``address``, in ``role``."""
    return ActiveParticipant(user_id=user, user_is_requestor=True, role_id=role, network_access_point_id=address,
                             network_access_point_type=access_point_type(address))


def study_objects(study_uid: str, details: dict[str, str], patient_id: str | None) -> list[ParticipantObject]:
    """The study (with ``details``) and, when known, its patient: the participant objects of an access."""
    objects = [ParticipantObject(object_id=study_uid, id_type=STUDY_UID_TYPE, type_code=2, type_code_role=3,
                                 details=details)]
    if patient_id is not None:
        objects.append(ParticipantObject(object_id=patient_id, id_type=PATIENT_ID_TYPE, type_code=1, type_code_role=1))
    return objects


__all__ = ["APPLICATION_ROLE", "DESTINATION_ROLE", "NAP_IP", "PATIENT_ID_TYPE", "SOURCE_ROLE", "STUDY_UID_TYPE",
           "access_point_type", "application", "requesting_user", "requestor", "study_objects"]
