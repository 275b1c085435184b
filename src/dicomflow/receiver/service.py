"""The receiver's side of the store decision: association events, and C-STORE data sets as streams.

The decision itself (validate, write, publish, answer) is shared with
STOW-RS and lives in :mod:`dicomflow.ingest.service`. The receiver's
:class:`StoreService` is that one, plus :meth:`~StoreService.begin` to
receive a data set as a stream of P-DATA fragments
(:class:`~dicomflow.receiver.reception.Reception`). An association engine
(the native acceptor in :mod:`~dicomflow.receiver.acceptor` or pynetdicom in
:mod:`~dicomflow.receiver.pynetdicom_server`) calls it once per C-STORE.

Engines report association life cycle to an :class:`AssociationEvents`
(the receiver), which keeps the audit tallies.
"""

from __future__ import annotations

from typing import Protocol

from dicomflow.ingest import service as shared
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.service import SUCCESS, StoreOutcome, StoreRequest, error_comment
from dicomflow.ingest.transfer_log import Peer
from dicomflow.receiver.reception import Reception


class AssociationEvents(Protocol):
    """What an engine tells the receiver about associations (for the audit trail and the dispatcher)."""

    def established(self, association: object, peer: Peer) -> None: ...

    def closed(self, association: object, peer: Peer | None) -> None: ...

    def rejected(self, peer: Peer, reason: str, kind: str = "other") -> None: ...

    def aborted(self, association: object, kind: str) -> None: ...

    def tls_refused(self, peer_address: str, reason: str, kind: str) -> None: ...


class StoreService(shared.StoreService):
    """The shared store decision (:class:`dicomflow.ingest.service.StoreService`), and streamed C-STOREs."""

    def begin(self, association: object, *, transfer_syntax_uid: str, sop_class_uid: str | None,
              sop_instance_uid: str | None, source: Source, max_bytes: int) -> Reception:
        """Start receiving a data set as a stream (:class:`~dicomflow.receiver.reception.Reception`)."""
        return Reception(self, association, transfer_syntax_uid=transfer_syntax_uid, sop_class_uid=sop_class_uid,
                         sop_instance_uid=sop_instance_uid, source=source, max_bytes=max_bytes)


__all__ = ["SUCCESS", "AssociationEvents", "StoreOutcome", "StoreRequest", "StoreService", "error_comment"]
