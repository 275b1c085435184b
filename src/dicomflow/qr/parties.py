"""Who takes part in a retrieve, read from a pynetdicom event (for the logs and the audit)."""

from __future__ import annotations

from pynetdicom.events import Event

from dicomflow.audit.retrieve import RetrieveParties

#: User Identity types whose primary field is a username (PS3.7 D.3.3.7.1).
_USERNAME_TYPES = (1, 2)


def parties_of(event: Event, node_id: str, destination_ae: str | None = None,
               destination_address: str | None = None) -> RetrieveParties:
    """The requestor, this archive and the destination (the requestor itself when ``destination_ae`` is None)."""
    requestor, acceptor = event.assoc.requestor, event.assoc.acceptor
    calling = (requestor.ae_title or "").strip()
    identity = getattr(requestor, "user_identity", None)
    user = None
    if identity is not None and int(identity.user_identity_type or 0) in _USERNAME_TYPES:
        user = bytes(identity.primary_field or b"").decode("utf-8", "replace") or None
    return RetrieveParties(
        node_id=node_id, archive_ae=(acceptor.ae_title or "").strip(),
        requestor_ae=calling, requestor_address=requestor.address or None,
        destination_ae=calling if destination_ae is None else destination_ae,
        destination_address=(requestor.address or None) if destination_ae is None else destination_address,
        user=user,
    )


__all__ = ["parties_of"]
