"""The C-STORE SCP: a pynetdicom Application Entity and a small store handler.

One process runs one :class:`Receiver`: pynetdicom's thread per association,
all sharing one Kafka :class:`~dicomflow.kafka.producer.Publisher`. For each
C-STORE the handler (:meth:`StoreService.on_store`):

1. reads the few header attributes it needs from the encoded data set;
2. validates the UIDs and resolves the tenant;
3. writes preamble + meta + the data set *as received* atomically and durably;
4. publishes the store event (storage_queue) and its receipt (log_queue) and
   waits for Kafka's acks=all acknowledgement;
5. answers Success, or a failure status with an Error Comment.

It never raises: every problem becomes a status the sender understands
(``0xA700`` out of resources: retry later; ``0xA900`` / ``0xC000``: this
instance cannot be accepted). A re-sent instance overwrites its file and gets
a new store event.

Every connection gets ``TCP_NODELAY``: a C-STORE is a small request and a
small response, and with Nagle's algorithm plus delayed ACKs each one stalls
about 40 ms.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from typing import Any, cast

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes
from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.transport import ThreadedAssociationServer

from dicomflow.audit import events as audit
from dicomflow.errors import PublishError
from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent
from dicomflow.receiver.audit import Peer, TransferLog
from dicomflow.receiver.exceptions import OUT_OF_RESOURCES, IngestError, InternalError, PublishFailedError
from dicomflow.receiver.header import InstanceHeader
from dicomflow.receiver.ingest import Identity, Ingestor, Source
from dicomflow.receiver.part10 import DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE, EXPLICIT_VR_LE, IMPLICIT_VR_LE
from dicomflow.receiver.uids import is_valid_uid
from dicomflow.settings import ReceiverSettings, Settings

log = logging.getLogger(__name__)

SUCCESS = 0x0000
#: Seconds :meth:`Receiver.stop` lets running associations finish before aborting them.
STOP_GRACE_S = 10.0
#: Seconds an audit publication may take (it happens after the connection closed).
AUDIT_TIMEOUT_S = 5.0
#: Error Comment is an LO: at most 64 characters, no backslash, no control characters.
_COMMENT_MAX = 64
#: Largest PDU we accept (pynetdicom's default is 16 kB). A typical CT or MR
#: image then arrives in one P-DATA PDU instead of three, and each PDU costs
#: pynetdicom a decode, a state-machine step and a few event dispatches.
MAX_PDU_BYTES = 1024 * 1024


def storage_contexts(extra_transfer_syntaxes: Sequence[str] = ()) -> list[PresentationContext]:
    """Every storage SOP class with every transfer syntax pydicom knows, plus Verification.

    The instance is to be kept as the sender has it, so the transfer syntaxes
    are listed compressed first and Implicit VR Little Endian last:
    pynetdicom accepts the first syntax of *our* list that the sender
    proposes, and a sender offers a compressed syntax only when its file is
    compressed (offering the uncompressed ones as fallbacks it would have to
    decompress to). Whether the archive serves the syntax as is becomes the
    store event's ``transfer_status``.
    """
    syntaxes = order_transfer_syntaxes([*AllTransferSyntaxes, *extra_transfer_syntaxes])
    contexts = [
        build_context(cx.abstract_syntax, syntaxes) for cx in AllStoragePresentationContexts if cx.abstract_syntax
    ]
    contexts.extend(VerificationPresentationContexts)
    return contexts


_UNCOMPRESSED_LAST = (DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_LE, EXPLICIT_VR_BE, IMPLICIT_VR_LE)


def order_transfer_syntaxes(syntaxes: Sequence[str]) -> list[str]:
    """Unique syntaxes, encapsulated (compressed) ones first, then deflated, explicit LE, explicit BE, implicit LE."""
    unique = list(dict.fromkeys(str(s) for s in syntaxes))
    compressed = [s for s in unique if s not in _UNCOMPRESSED_LAST]
    return compressed + [s for s in _UNCOMPRESSED_LAST if s in unique]


def failure_status(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (trimmed to a valid LO)."""
    text = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in comment)
    ds = Dataset()
    ds.Status = status
    ds.ErrorComment = text[:_COMMENT_MAX].rstrip()
    return ds


def _peer_of(event: Event) -> Peer:
    requestor, acceptor = event.assoc.requestor, event.assoc.acceptor
    return Peer(
        calling_ae=(requestor.ae_title or "").strip(),
        calling_address=requestor.address or None,
        called_ae=(acceptor.ae_title or "").strip(),
        called_address=acceptor.address or None,
    )


class StoreService:
    """The C-STORE decision: validate, write, publish, answer. Dependencies passed in.

    Shared by every association thread of the process; it keeps no
    per-request state of its own.
    """

    def __init__(self, ingestor: Ingestor, publisher: Publisher, transfers: TransferLog, *, publish_timeout_s: float) -> None:
        self.ingestor = ingestor
        self.publisher = publisher
        self.transfers = transfers
        self.publish_timeout_s = publish_timeout_s

    def on_store(self, event: Event) -> int | Dataset:
        """Handle one C-STORE request; return its status. Never raises."""
        request = cast(C_STORE, event.request)
        requestor = event.assoc.requestor
        source = Source(ae_title=(requestor.ae_title or "").strip(), address=requestor.address or "")
        header: InstanceHeader | None = None
        identity: Identity | None = None
        try:
            dataset = request.DataSet.getvalue() if request.DataSet is not None else b""
            syntax = str(event.context.transfer_syntax)
            header = self.ingestor.read(dataset, syntax)
            identity = self.ingestor.identify(
                header,
                sop_class_uid=_text(request.AffectedSOPClassUID),
                sop_instance_uid=_text(request.AffectedSOPInstanceUID),
                calling_ae=source.ae_title,
            )
            path, size = self.ingestor.write(identity, dataset, syntax, source)
            store_event = self.ingestor.store_event(identity, path, size, syntax, source)
            self._publish(store_event)
        except IngestError as exc:
            return self._refuse(event, exc, header, identity, source)
        except Exception as exc:  # noqa: BLE001 - a handler answers a status, it never raises
            log.exception("unexpected error storing an instance from %s (%s)", source.ae_title, source.address)
            return self._refuse(event, InternalError(f"internal error: {type(exc).__name__}"), header, identity, source)
        self.transfers.stored(
            event.assoc, tenant=identity.tenant, study_uid=identity.study_uid,
            sop_class_uid=identity.sop_class_uid, patient_id=identity.header.patient_id or None,
        )
        log.debug("stored %s from %s as %s", identity.sop_uid, source.ae_title, store_event.file_path)
        return SUCCESS

    def _publish(self, store_event: Any) -> None:
        """Send the store event and its receipt; return only once Kafka acknowledged both.

        Raises:
            PublishFailedError: not acknowledged within publish_timeout_s, or
                the publisher cannot send at all.
        """
        try:
            result = self.publisher.send_store_event(store_event, timeout_s=self.publish_timeout_s)
        except PublishError as exc:
            raise PublishFailedError(f"Kafka unavailable: {exc}", sop_uid=store_event.sop_uid) from exc
        if not result.ok:
            reason = result.failures[0].reason
            raise PublishFailedError(f"Kafka did not acknowledge the store event: {reason}", sop_uid=store_event.sop_uid)

    def _refuse(
        self, event: Event, exc: IngestError, header: InstanceHeader | None, identity: Identity | None, source: Source
    ) -> Dataset:
        """Log, audit and answer a refused instance."""
        transient = exc.status == OUT_OF_RESOURCES
        log.log(
            logging.ERROR if transient else logging.WARNING,
            "refused an instance from %s (%s) with status 0x%04X: %s",
            source.ae_title, source.address, exc.status, exc,
        )
        study = identity.study_uid if identity else (header.study_uid if header else None)
        tenant = identity.tenant if identity else self.ingestor.tenants.default
        self.transfers.failed(
            event.assoc, tenant=tenant, study_uid=study if study and is_valid_uid(study) else None,
            outcome=audit.SERIOUS_FAILURE if transient else audit.MINOR_FAILURE, reason=str(exc),
            sop_class_uid=identity.sop_class_uid if identity else None,
        )
        return failure_status(exc.status, exc.reason)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# --------------------------------------------------------------------------- handlers


def handle_store(event: Event, service: StoreService) -> int | Dataset:
    """EVT_C_STORE: delegate to the service (which never raises)."""
    return service.on_store(event)


def handle_established(event: Event, transfers: TransferLog) -> None:
    """EVT_ESTABLISHED: start counting what this association transfers."""
    peer = _peer_of(event)
    transfers.opened(event.assoc, peer)
    log.info("association from %s (%s) established", peer.calling_ae, peer.calling_address)


def handle_closed(event: Event, transfers: TransferLog) -> None:
    """EVT_CONN_CLOSE: emit the association's audit events."""
    stored, refused = transfers.closed(event.assoc)
    if stored or refused:
        requestor = event.assoc.requestor
        log.info("association from %s (%s) closed: %d instance(s) stored, %d refused",
                 (requestor.ae_title or "").strip(), requestor.address, stored, refused)


def handle_rejected(event: Event, receiver: Receiver) -> None:
    """EVT_REJECTED: audit the refused peer (a User Authentication failure)."""
    receiver.audit_rejection(_peer_of(event))


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

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None:
        """Serve a connection accepted by someone else (runs it in its own thread)."""
        set_nodelay(client)
        self.process_request(client, address)


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off (observer: a failure only costs latency)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY: %s", exc)


def unbind_standard_logging(server: AssociationServer) -> None:
    """Drop pynetdicom's PDU/DIMSE logging handlers from this server.

    pynetdicom binds them to every server; they format a multi-line
    description of each PDU and message before the logger decides to drop it,
    which costs more than reading the instance's header. Bound only when the
    ``pynetdicom`` logger would print them (``--log-level DEBUG``).
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


class Receiver:
    """One receiver process: the AE, its server, the store service and the audit trail.

    ``publisher`` may be shared (tests, a host application); when omitted the
    receiver builds its own with ``receiver.kafka_linger_ms`` and closes it
    in :meth:`stop`.

    Raises:
        ConfigError: (constructor) a tenant setting is invalid or the Kafka
            client rejects its configuration.
        OSError: (constructor) the port cannot be bound.
    """

    def __init__(self, settings: Settings, *, publisher: Publisher | None = None, listen: bool = True) -> None:
        self.settings = settings
        rs = settings.receiver
        self._owns_publisher = publisher is None
        self.publisher = publisher or Publisher(
            dataclasses.replace(settings.kafka, linger_ms=rs.kafka_linger_ms), settings.topics,
            client_id=f"dicomflow-receiver-{settings.worker_node_id}",
        )
        self.ingestor = Ingestor(settings.storage, rs, settings.worker_node_id)
        self.ingestor.root.mkdir(parents=True, exist_ok=True)
        self.transfers = TransferLog(settings.worker_node_id, self._emit_audit)
        self.service = StoreService(self.ingestor, self.publisher, self.transfers, publish_timeout_s=rs.publish_timeout_s)
        self.ae = build_ae(rs)
        self.server = cast(AssociationServer, self.ae.make_server(
            (rs.host, rs.port),
            evt_handlers=[
                (evt.EVT_C_STORE, handle_store, [self.service]),
                (evt.EVT_ESTABLISHED, handle_established, [self.transfers]),
                (evt.EVT_CONN_CLOSE, handle_closed, [self.transfers]),
                (evt.EVT_REJECTED, handle_rejected, [self]),
            ],
            server_class=AssociationServer,
            listen=listen,
        ))
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.INFO):
            unbind_standard_logging(self.server)
        self._listen = listen
        self._thread: threading.Thread | None = None
        self._stopped = False

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on (the real port when 0 was asked)."""
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self, *, announce: bool = True) -> None:
        """Serve in a background thread; publish Application Start unless ``announce`` is False."""
        if self._listen:
            self._thread = threading.Thread(target=self.server.serve_forever, name="dicomflow-scp", daemon=True)
            self._thread.start()
            host, port = self.address
            log.info("DICOM receiver %s listening on %s:%d, storing under %s",
                     self.settings.receiver.ae_title, host, port, self.ingestor.root)
        if announce:
            self.announce(started=True)

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None:
        """Serve a connection accepted by the dispatcher (multi-process mode)."""
        self.server.adopt(client, address)

    def active_associations(self) -> int:
        return len(self.server.active_associations)

    def stop(self, *, grace_s: float = STOP_GRACE_S, announce: bool = True) -> None:
        """Stop accepting, let running associations finish (abort them after ``grace_s``), flush, close.

        Idempotent. Publishes Application Stop unless ``announce`` is False.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self.server.shutdown()
        deadline = time.monotonic() + grace_s
        while self.server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in self.server.active_associations:
            log.warning("aborting association from %s still running at shutdown", assoc.requestor.ae_title)
            assoc.abort()
        self.server.server_close()
        if announce:
            self.announce(started=False)
        if self._owns_publisher:
            self.publisher.close()

    # ------------------------------------------------------------------ audit

    def announce(self, *, started: bool) -> None:
        """Application Activity (110100): start or stop of this receiver."""
        rs = self.settings.receiver
        host, port = self.address
        self._emit_audit([audit.application_activity(
            started=started, node_id=self.settings.worker_node_id, tenant_id=self.ingestor.tenants.default,
            application="scp", ae_title=rs.ae_title, address=f"{host}:{port}",
        )])

    def audit_rejection(self, peer: Peer) -> None:
        """Audit an association refused (calling AE not allowed, or too many associations)."""
        allowed = [a.strip() for a in self.settings.receiver.allowed_calling_aes]
        if allowed and peer.calling_ae not in allowed:
            reason = f"calling AE title {peer.calling_ae!r} is not in receiver.allowed_calling_aes"
        else:
            reason = f"association refused (limit {self.settings.receiver.max_associations} reached or called AE unknown)"
        log.warning("refused an association from %s (%s): %s", peer.calling_ae, peer.calling_address, reason)
        tenant = self.ingestor.tenants.resolve(None, peer.calling_ae)
        self._emit_audit([audit.association_rejected(
            node_id=self.settings.worker_node_id, tenant_id=tenant, calling_ae=peer.calling_ae,
            calling_address=peer.calling_address, called_ae=peer.called_ae, called_address=peer.called_address,
            reason=reason,
        )])

    def _emit_audit(self, events: Sequence[AuditEvent]) -> None:
        """Publish audit events and wait briefly; failures are logged, never raised (observer)."""
        try:
            result = self.publisher.send_audit(events, timeout_s=AUDIT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - auditing must not break receiving
            log.warning("could not publish %d audit event(s): %s", len(events), exc)
            return
        if not result.ok:
            log.warning("%d of %d audit event(s) not acknowledged: %s",
                        len(result.failures), len(events), result.failures[0].reason)


__all__ = [
    "AssociationServer",
    "Receiver",
    "StoreService",
    "build_ae",
    "failure_status",
    "handle_store",
    "storage_contexts",
]
