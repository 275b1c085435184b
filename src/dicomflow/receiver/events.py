"""What an association engine tells the receiver: :class:`AssociationEvents`.

The engines (the native acceptor in :mod:`~dicomflow.receiver.native`,
pynetdicom in :mod:`~dicomflow.receiver.pynetdicom_server`) report each
association's life cycle to the receiver (:class:`~dicomflow.receiver.scp.Receiver`),
which keeps the audit tallies and the metrics. Each association is named by
the :class:`~dicomflow.ingest.transfer_log.SessionKey` its engine made for
it, the same key it passes with each C-STORE to the store service.
"""

from __future__ import annotations

from typing import Protocol

from dicomflow.ingest.transfer_log import Peer, SessionKey


class AssociationEvents(Protocol):
    """What an engine tells the receiver about associations (for the audit trail and the dispatcher)."""

    def established(self, session: SessionKey, peer: Peer) -> None: ...

    def closed(self, session: SessionKey, peer: Peer | None) -> None: ...

    def rejected(self, peer: Peer, reason: str, kind: str = "other") -> None: ...

    def aborted(self, session: SessionKey, kind: str) -> None: ...

    def tls_refused(self, peer_address: str, reason: str, kind: str) -> None: ...


__all__ = ["AssociationEvents"]
