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
import os
import socket
import socketserver
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import ThreadedAssociationServer

from dicomflow.dicom.constants import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from dicomflow.dicom.part10 import read_file_meta
from dicomflow.ingest.exceptions import OUT_OF_RESOURCES
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.service import SUCCESS, StoreRequest, StoreService
from dicomflow.ingest.transfer_log import Peer, SessionKey
from dicomflow.receiver.events import AssociationEvents
from dicomflow.receiver.identity import IdentityPolicy
from dicomflow.receiver.pynetdicom_identity import handle_requested, username_of
from dicomflow.receiver.reception import DatasetTooLarge, Reception
from dicomflow.receiver.tcp import prompt_acks, set_nodelay
from dicomflow.receiver.tls import ServerTls, TlsRefused
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
        user=username_of(requestor),
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- handlers


#: Bytes read at a time from pynetdicom's temporary file into the reception.
_FEED_CHUNK = 1024 * 1024


class Sessions:
    """The :class:`~dicomflow.ingest.transfer_log.SessionKey` of each pynetdicom association, while it lives."""

    def __init__(self) -> None:
        self._keys: weakref.WeakKeyDictionary[Association, SessionKey] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def of(self, assoc: Association) -> SessionKey:
        """The association's key (made on first use: its handlers run on more than one thread)."""
        with self._lock:
            key = self._keys.get(assoc)
            if key is None:
                key = self._keys[assoc] = SessionKey("association")
            return key


def handle_store(event: Event, service: StoreService, sessions: Sessions, max_dataset_bytes: int) -> int | Dataset:
    """EVT_C_STORE: hand the encoded data set to the service (which never raises).

    pynetdicom wrote the data set to a temporary file as it arrived
    (``STORE_RECV_CHUNKED_DATASET``); it is fed to the same streaming
    reception as the native engine's, a chunk at a time, so memory stays
    bounded. Past ``max_dataset_bytes`` the association is aborted (the
    check comes once pynetdicom has the whole data set: it offers no
    per-fragment hook).
    """
    request = cast(C_STORE, event.request)
    requestor = event.assoc.requestor
    source = Source(ae_title=(requestor.ae_title or "").strip(), address=requestor.address or "")
    syntax = str(event.context.transfer_syntax)
    path = getattr(request, "_dataset_path", None)
    if path is None:  # not chunked (a host application's pynetdicom settings)
        outcome = service.store(sessions.of(event.assoc), StoreRequest(
            dataset=request.DataSet.getvalue() if request.DataSet is not None else b"",
            transfer_syntax_uid=syntax,
            sop_class_uid=_text(request.AffectedSOPClassUID),
            sop_instance_uid=_text(request.AffectedSOPInstanceUID),
            source=source,
        ))
    else:
        reception = Reception(
            service, sessions.of(event.assoc), transfer_syntax_uid=syntax, sop_class_uid=_text(request.AffectedSOPClassUID),
            sop_instance_uid=_text(request.AffectedSOPInstanceUID), source=source, max_bytes=max_dataset_bytes,
        )
        try:
            _feed_file(Path(path[0] if isinstance(path, tuple) else path), reception)
        except DatasetTooLarge as exc:
            log.warning("association from %s (%s): %s; aborting, partial data set removed",
                        source.ae_title, source.address, exc)
            event.assoc.abort()
            return OUT_OF_RESOURCES
        except (OSError, ValueError) as exc:
            reception.discard()
            log.error("cannot read pynetdicom's temporary file %s: %s", path, exc)
            return OUT_OF_RESOURCES
        outcome = reception.finish()
    if outcome.ok:
        return SUCCESS
    status = Dataset()
    status.Status = outcome.status
    status.ErrorComment = outcome.comment or ""
    return status


def _feed_file(path: Path, reception: Reception) -> None:
    """Feed the data set of pynetdicom's Part 10 temporary file (after its File Meta) to ``reception``.

    Raises:
        OSError: the file cannot be read.
        ValueError: its File Meta Information is broken.
        DatasetTooLarge: the data set is larger than the reception allows.
    """
    with open(path, "rb") as f:
        head = f.read(_FEED_CHUNK)
        _meta, start = read_file_meta(head, 132)
        size = os.fstat(f.fileno()).st_size - start
        if size <= 0:
            reception.feed(b"", True)
            return
        f.seek(start)
        left = size
        while left > 0:
            chunk = f.read(min(_FEED_CHUNK, left))
            if not chunk:
                raise OSError(f"{path} ended {left} bytes early")
            left -= len(chunk)
            reception.feed(chunk, left == 0)


def handle_established(event: Event, events: AssociationEvents, sessions: Sessions) -> None:
    events.established(sessions.of(event.assoc), _peer_of(event))


def handle_closed(event: Event, events: AssociationEvents, sessions: Sessions) -> None:
    events.closed(sessions.of(event.assoc), _peer_of(event))


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
    """pynetdicom's threaded server with our TCP options (:func:`accepted`), and a mode that accepts no connections itself.

    With ``listen=False`` the server binds nothing: connections accepted
    elsewhere (the multi-process dispatcher) are handed to :meth:`adopt`.
    """

    def __init__(self, *args: Any, listen: bool = True, tls: ServerTls | None = None,
                 events: AssociationEvents | None = None, **kwargs: Any) -> None:
        self._listen = listen
        #: TLS handshake per connection, on the connection's thread. (pynetdicom's
        #: own ``ssl_context`` wraps in the accept loop, where one silent peer
        #: would hold up every other connection.)
        self.tls = tls
        self.events = events
        super().__init__(*args, **kwargs)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request = self.tls.accept(request)
            except TlsRefused as refused:
                if self.events is not None:
                    host = client_address[0] if isinstance(client_address, tuple) else str(client_address)
                    self.events.tls_refused(str(host), str(refused), refused.kind)
                return
        super().process_request_thread(request, client_address)

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
        return accepted(client), address


def accepted(client: socket.socket) -> socket.socket:
    """A new connection with our TCP options: no Nagle on our side, prompt acknowledgements.

    pynetdicom reads through ``AssociationSocket.recv``, which calls the
    socket's ``recv``: the socket returned here (or, over TLS, the one the
    context wraps it in) re-arms ``TCP_QUICKACK`` there (:mod:`~dicomflow.receiver.tcp`).
    """
    client = prompt_acks(client)
    set_nodelay(client)
    return client


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


def build_ae(receiver: ReceiverSettings, supported_transfer_syntaxes: Sequence[str]) -> AE:
    """The Application Entity: AE title, allowed peers, association limit, storage contexts.

    ``supported_transfer_syntaxes`` (``ingest.supported_transfer_syntaxes``) are accepted besides pydicom's.
    """
    ae = AE(ae_title=receiver.ae_title)
    ae.maximum_pdu_size = MAX_PDU_BYTES
    ae.maximum_associations = receiver.max_associations
    ae.require_calling_aet = [a.strip() for a in receiver.allowed_calling_aes]
    ae.supported_contexts = storage_contexts(supported_transfer_syntaxes)
    return ae


class PynetdicomEngine:
    """The receiver's network layer on pynetdicom (see the module documentation).

    With ``[receiver.tls]`` the main server speaks TLS (``tls.port = 0``), or a
    second server on ``tls.port`` does, beside the plain one.
    """

    def __init__(self, receiver: ReceiverSettings, service: StoreService, events: AssociationEvents, *,
                 listen: bool = True) -> None:
        # pynetdicom's only way to keep a data set out of memory is this process-wide switch: each
        # C-STORE data set is written to a temporary file (in the system's temporary folder) as it
        # arrives and handed to handle_store by path.
        _config.STORE_RECV_CHUNKED_DATASET = True
        self.ae = build_ae(receiver, service.ingestor.settings.supported_transfer_syntaxes)
        tls = ServerTls(receiver.tls) if receiver.tls.enabled else None
        self.main_secure = tls is not None and receiver.tls.port == 0
        sessions = Sessions()
        handlers: list[Any] = [
            (evt.EVT_C_STORE, handle_store, [service, sessions, receiver.max_dataset_bytes]),
            (evt.EVT_ESTABLISHED, handle_established, [events, sessions]),
            (evt.EVT_CONN_CLOSE, handle_closed, [events, sessions]),
            (evt.EVT_REJECTED, handle_rejected, [events, receiver]),
            (evt.EVT_REQUESTED, handle_requested, [IdentityPolicy(receiver), events]),
        ]

        def server(port: int, secure: bool, bind: bool) -> AssociationServer:
            made = cast(AssociationServer, self.ae.make_server(
                (receiver.host, port), evt_handlers=handlers, server_class=AssociationServer, listen=bind,
                tls=tls if secure else None, events=events,
            ))
            if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
                unbind_standard_logging(made)
            return made

        self.server = server(receiver.port, self.main_secure, listen)
        self.tls_server: AssociationServer | None = None
        if tls is not None and not self.main_secure:
            self.tls_server = server(receiver.tls.port, True, listen)
        self._tls_thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """The (host, port) of the TLS server beside the plain one, if any."""
        if self.tls_server is None:
            return None
        host, port = self.tls_server.server_address[:2]
        return str(host), int(port)

    def _servers(self) -> list[AssociationServer]:
        return [self.server] + ([self.tls_server] if self.tls_server is not None else [])

    def serve_forever(self) -> None:
        if self.tls_server is not None:
            self._tls_thread = threading.Thread(target=self.tls_server.serve_forever, name="dicomflow-scp-tls",
                                                daemon=True)
            self._tls_thread.start()
        self.server.serve_forever()

    def shutdown(self) -> None:
        if self.tls_server is not None and self._tls_thread is not None:
            self.tls_server.shutdown()
        self.server.shutdown()

    def adopt(self, client: socket.socket, address: tuple[str, int], *, secure: bool | None = None) -> None:
        client = accepted(client)
        secure = self.main_secure if secure is None else secure
        target = self.tls_server if secure and self.tls_server is not None else self.server
        target.process_request(client, address)

    def active_associations(self) -> int:
        return sum(len(s.active_associations) for s in self._servers())

    def abort_all(self) -> None:
        for server in self._servers():
            for assoc in server.active_associations:
                log.warning("aborting association from %s still running at shutdown", assoc.requestor.ae_title)
                assoc.abort()

    def close(self) -> None:
        for server in self._servers():
            server.server_close()


__all__ = ["MAX_PDU_BYTES", "PynetdicomEngine", "build_ae", "order_transfer_syntaxes", "storage_contexts"]
