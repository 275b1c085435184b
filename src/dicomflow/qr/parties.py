"""Who takes part in a retrieve (for the logs and the audit), from a pynetdicom event or the native engine's peer."""

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
    return parties(node_id, (acceptor.ae_title or "").strip(), calling, requestor.address or None, user,
                   destination_ae, destination_address)


def parties(node_id: str, archive_ae: str, requestor_ae: str, requestor_address: str | None, user: str | None,
            destination_ae: str | None = None, destination_address: str | None = None) -> RetrieveParties:
    """The parties of one retrieve; the destination is the requestor itself when ``destination_ae`` is None (C-GET)."""
    return RetrieveParties(
        node_id=node_id, archive_ae=archive_ae, requestor_ae=requestor_ae, requestor_address=requestor_address,
        destination_ae=requestor_ae if destination_ae is None else destination_ae,
        destination_address=requestor_address if destination_ae is None else destination_address,
        user=user,
    )


__all__ = ["parties", "parties_of"]
