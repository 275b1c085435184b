"""The C-STORE side of the store decision: what an association engine tells the receiver.

The decision itself (validate, write, publish, answer) is shared with
STOW-RS and lives in :mod:`dicomflow.ingest.service`; an association engine
(the native acceptor in :mod:`~dicomflow.receiver.acceptor` or pynetdicom in
:mod:`~dicomflow.receiver.pynetdicom_server`) calls its
:class:`~dicomflow.ingest.service.StoreService` once per C-STORE.

Engines report association life cycle to an :class:`AssociationEvents`
(the receiver), which keeps the audit tallies.
"""

from __future__ import annotations

from typing import Protocol

from dicomflow.ingest.service import SUCCESS, StoreOutcome, StoreRequest, StoreService, error_comment
from dicomflow.ingest.transfer_log import Peer


class AssociationEvents(Protocol):
    """What an engine tells the receiver about associations (for the audit trail and the dispatcher)."""

    def established(self, association: object, peer: Peer) -> None: ...

    def closed(self, association: object, peer: Peer | None) -> None: ...

    def rejected(self, peer: Peer, reason: str) -> None: ...


__all__ = ["SUCCESS", "AssociationEvents", "StoreOutcome", "StoreRequest", "StoreService", "error_comment"]
