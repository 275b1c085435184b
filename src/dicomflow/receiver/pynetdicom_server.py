"""The pynetdicom engine: pynetdicom's AE and threaded server around the store service.

Selected with ``receiver.engine = "pynetdicom"``. pynetdicom implements the
whole DICOM network protocol (user identity, extended negotiation, TLS if
configured), at a cost: building pydicom datasets for every command set and
polling loops that sleep a millisecond put its ceiling near 250 C-STOREs/s
per process on this hardware, even with a handler that does nothing. The
native engine (:mod:`~dicomflow.receiver.acceptor`) is the default for that
reason; this one stays as the reference implementation and the fallback.
"""

from __future__ import annotations

import logging
import socket
import socketserver
from collections.abc import Sequence
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import ThreadedAssociationServer

from dicomflow.dicom.constants import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.transfer_log import Peer
from dicomflow.receiver.service import SUCCESS, AssociationEvents, StoreRequest, StoreService
from dicomflow.settings import ReceiverSettings

log = logging.getLogger(__name__)

#: Largest PDU we accept (pynetdicom's default is 16 kB). A typical CT or MR
#: image then arrives in one P-DATA PDU instead of three, and each PDU costs
#: pynetdicom a decode, a state-machine step and a few event dispatches.
MAX_PDU_BYTES = 1024 * 1024

_UNCOMPRESSED_LAST = (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE)


def order_transfer_syntaxes(syntaxes: Sequence[str]) -> list[str]:
    """Unique syntaxes, encapsulated (compressed) ones first, then deflated, explicit LE, explicit BE, implicit LE."""
    unique = list(dict.fromkeys(str(s) for s in syntaxes))
    compressed = [s for s in unique if s not in _UNCOMPRESSED_LAST]
    return compressed + [s for s in _UNCOMPRESSED_LAST if s in unique]


def storage_contexts(extra_transfer_syntaxes: Sequence[str] = ()) -> list[PresentationContext]:
    """Every storage SOP class with every transfer syntax pydicom knows, plus Verification.

    The instance is to be kept as the sender has it, so the transfer syntaxes
    are listed compressed first and Implicit VR Little Endian last:
    pynetdicom accepts the first syntax of *our* list that the sender
    proposes, and a sender offers a compressed syntax only when its file is
    compressed (offering the uncompressed ones as fallbacks it would have to
    decompress to).
    """
    syntaxes = order_transfer_syntaxes([*AllTransferSyntaxes, *extra_transfer_syntaxes])
    contexts = [
        build_context(cx.abstract_syntax, syntaxes) for cx in AllStoragePresentationContexts if cx.abstract_syntax
    ]
    contexts.extend(VerificationPresentationContexts)
    return contexts


def _peer_of(event: Event) -> Peer:
    requestor, acceptor = event.assoc.requestor, event.assoc.acceptor
    return Peer(
        calling_ae=(requestor.ae_title or "").strip(),
        calling_address=requestor.address or None,
        called_ae=(acceptor.ae_title or "").strip(),
        called_address=acceptor.address or None,
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- handlers


def handle_store(event: Event, service: StoreService) -> int | Dataset:
    """EVT_C_STORE: hand the encoded data set to the service (which never raises)."""
    request = cast(C_STORE, event.request)
    requestor = event.assoc.requestor
    outcome = service.store(event.assoc, StoreRequest(
        dataset=request.DataSet.getvalue() if request.DataSet is not None else b"",
        transfer_syntax_uid=str(event.context.transfer_syntax),
        sop_class_uid=_text(request.AffectedSOPClassUID),
        sop_instance_uid=_text(request.AffectedSOPInstanceUID),
        source=Source(ae_title=(requestor.ae_title or "").strip(), address=requestor.address or ""),
    ))
    if outcome.ok:
        return SUCCESS
    status = Dataset()
    status.Status = outcome.status
    status.ErrorComment = outcome.comment or ""
    return status


def handle_established(event: Event, events: AssociationEvents) -> None:
    events.established(event.assoc, _peer_of(event))


def handle_closed(event: Event, events: AssociationEvents) -> None:
    events.closed(event.assoc, _peer_of(event))


def handle_rejected(event: Event, events: AssociationEvents, receiver: ReceiverSettings) -> None:
    peer = _peer_of(event)
    allowed = [a.strip() for a in receiver.allowed_calling_aes]
    if allowed and peer.calling_ae not in allowed:
        reason = f"calling AE title {peer.calling_ae!r} is not in receiver.allowed_calling_aes"
    else:
        reason = f"association refused (limit {receiver.max_associations} reached or called AE unknown)"
    events.rejected(peer, reason)


# --------------------------------------------------------------------------- server


class AssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with TCP_NODELAY, and a mode that accepts no connections itself.

    With ``listen=False`` the server binds nothing: connections accepted
    elsewhere (the multi-process dispatcher) are handed to :meth:`adopt`.
    """

    def __init__(self, *args: Any, listen: bool = True, **kwargs: Any) -> None:
        self._listen = listen
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self._listen:
            super().server_bind()
        elif self.socket is not None:
            self.socket.close()

    def server_activate(self) -> None:
        if self._listen:
            super().server_activate()

    def server_close(self) -> None:
        if self._listen:
            super().server_close()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (the socket is closed by :meth:`server_close`).

        pynetdicom's own ``shutdown`` also unregisters the server from
        ``AE._servers``, where only ``AE.start_server`` registers it.
        """
        socketserver.BaseServer.shutdown(self)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = super().get_request()
        set_nodelay(client)
        return client, address


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off (observer: a failure only costs latency)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY: %s", exc)


def unbind_standard_logging(server: AssociationServer) -> None:
    """Drop pynetdicom's PDU/DIMSE logging handlers from this server.

    pynetdicom binds them to every server; they format a multi-line
    description of each PDU and message before the logger decides to drop it.
    Kept only when the ``pynetdicom`` logger would print them.
    """
    from pynetdicom import _handlers

    for event, handler in (
        (evt.EVT_PDU_RECV, _handlers.standard_pdu_recv_handler),
        (evt.EVT_PDU_SENT, _handlers.standard_pdu_sent_handler),
        (evt.EVT_DIMSE_RECV, _handlers.standard_dimse_recv_handler),
        (evt.EVT_DIMSE_SENT, _handlers.standard_dimse_sent_handler),
    ):
        server.unbind(event, handler)


def build_ae(receiver: ReceiverSettings) -> AE:
    """The Application Entity: AE title, allowed peers, association limit, storage contexts."""
    ae = AE(ae_title=receiver.ae_title)
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.maximum_associations = receiver.max_associations
    ae.require_calling_aet = [a.strip() for a in receiver.allowed_calling_aes]
    ae.supported_contexts = storage_contexts(receiver.supported_transfer_syntaxes)
    return ae


class PynetdicomEngine:
    """The receiver's network layer on pynetdicom (see the module documentation)."""

    def __init__(self, receiver: ReceiverSettings, service: StoreService, events: AssociationEvents, *,
                 listen: bool = True) -> None:
        self.ae = build_ae(receiver)
        self.server = cast(AssociationServer, self.ae.make_server(
            (receiver.host, receiver.port),
            evt_handlers=[
                (evt.EVT_C_STORE, handle_store, [service]),
                (evt.EVT_ESTABLISHED, handle_established, [events]),
                (evt.EVT_CONN_CLOSE, handle_closed, [events]),
                (evt.EVT_REJECTED, handle_rejected, [events, receiver]),
            ],
            server_class=AssociationServer,
            listen=listen,
        ))
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            unbind_standard_logging(self.server)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def shutdown(self) -> None:
        self.server.shutdown()

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None:
        set_nodelay(client)
        self.server.process_request(client, address)

    def active_associations(self) -> int:
        return len(self.server.active_associations)

    def abort_all(self) -> None:
        for assoc in self.server.active_associations:
            log.warning("aborting association from %s still running at shutdown", assoc.requestor.ae_title)
            assoc.abort()

    def close(self) -> None:
        self.server.server_close()


__all__ = ["MAX_PDU_BYTES", "PynetdicomEngine", "build_ae", "order_transfer_syntaxes", "storage_contexts"]
