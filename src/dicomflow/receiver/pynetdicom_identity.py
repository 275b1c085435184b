"""User identity on the pynetdicom engine: the same :class:`~dicomflow.receiver.identity.IdentityPolicy` as the native one.

pynetdicom calls an ``EVT_USER_ID`` handler only when the requestor sent a
user identity, so it cannot refuse an association that sent none. The
decision is taken in ``EVT_REQUESTED`` instead (right after the
A-ASSOCIATE-RQ arrived, before pynetdicom negotiates): a refusal is sent
from there as A-ASSOCIATE-RJ (1, 2, 1), which pynetdicom supports.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom.events import Event
from pynetdicom.pdu_primitives import UserIdentityNegotiation

from dicomflow.ingest.transfer_log import Peer
from dicomflow.receiver.events import AssociationEvents
from dicomflow.receiver.identity import IdentityPolicy, UserIdentity, Verdict

log = logging.getLogger(__name__)

#: PS3.7 D.3.3.7.3: rejected-permanent, DICOM UL service-provider (ACSE), no reason given.
REJECT_USER_IDENTITY = (1, 2, 1)


def requested_identity(requestor: Any) -> UserIdentity | None:
    """The requestor's User Identity negotiation item as a :class:`UserIdentity` (None when absent)."""
    item = getattr(requestor, "user_identity", None)
    if item is None:
        return None
    return UserIdentity(
        kind=int(item.user_identity_type or 0),
        positive_response_requested=bool(item.positive_response_requested),
        primary=bytes(item.primary_field or b""),
        secondary=bytes(item.secondary_field or b""),
    )


def username_of(requestor: Any) -> str | None:
    """The username the requestor's user identity names, if any (for the audit participants)."""
    identity = requested_identity(requestor)
    return identity.username if identity is not None else None


def handle_requested(event: Event, policy: IdentityPolicy, events: AssociationEvents) -> None:
    """EVT_REQUESTED: check the user identity; refuse with A-ASSOCIATE-RJ (and audit) when the policy says so."""
    assoc = event.assoc
    verdict: Verdict = policy.check(requested_identity(assoc.requestor))
    if not verdict.ok:
        assoc.acse.send_reject(*REJECT_USER_IDENTITY)
        request = assoc.requestor.primitive
        events.rejected(Peer(
            calling_ae=str(getattr(request, "calling_ae_title", "") or "").strip(),
            calling_address=assoc.requestor.address or None,
            called_ae=str(getattr(request, "called_ae_title", "") or "").strip(),
            called_address=assoc.acceptor.address or None,
            user=verdict.username,
        ), verdict.reason, "user-identity")
        assoc.kill()
        return
    if verdict.response_item:
        # pynetdicom answers positive-response requests only for types 3-5; the standard's answer for
        # a verified username/passcode is a User Identity sub-item with an empty server response.
        response = UserIdentityNegotiation()
        response.server_response = b""
        assoc.acceptor.add_negotiation_item(response)


__all__ = ["REJECT_USER_IDENTITY", "handle_requested", "requested_identity", "username_of"]
