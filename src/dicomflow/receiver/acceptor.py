"""The native engine: a DICOM association acceptor for storage (C-STORE) and verification (C-ECHO).

Why not pynetdicom here: pynetdicom turns every command set into pydicom
datasets and runs two polling loops per association that sleep a
millisecond between checks. With a handler that does nothing it tops out
near 250 C-STOREs/s per process on a two-core machine, under what Orthanc
does while also indexing. This acceptor does only what a storage SCP needs
(PS3.8 Upper Layer, PS3.7 C-STORE / C-ECHO) with blocking sockets, one
thread per association that sleeps in ``recv`` and never polls, and command
sets encoded with :mod:`struct` (:mod:`~dicomflow.receiver.dimse`).

Per association: read the A-ASSOCIATE-RQ (within ``ARTIM_TIMEOUT_S``),
refuse it (calling AE not allowed, too many associations, wrong application
context or protocol version) or accept each presentation context whose
abstract syntax is a storage SOP class or Verification, with the first
transfer syntax *the sender* proposed that we know: instances are kept as
sent. Then serve P-DATA until A-RELEASE-RQ (answered), A-ABORT, the peer
closing, or ``NETWORK_TIMEOUT_S`` without a PDU (we abort). Anything else
is a protocol error, answered with A-ABORT.

What it does not do (pynetdicom does, ``receiver.engine = "pynetdicom"``):
asynchronous operations windows (we answer with the default, synchronous),
SCP/SCU role selection and extended negotiation replies, user identity
responses, TLS.
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterable

from pydicom.uid import AllTransferSyntaxes

from dicomflow.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.transfer_log import Peer
from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.service import AssociationEvents, StoreRequest, StoreService
from dicomflow.settings import ReceiverSettings

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"
#: Every composite storage SOP class lives under this root (PS3.4 Annex B.5).
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."
#: Largest PDU we announce; typical CT/MR images arrive in one PDU.
MAX_PDU_BYTES = 1024 * 1024
#: Largest PDU we read at all, whatever we announced (a memory bound).
HARD_PDU_LIMIT = 64 * 1024 * 1024
#: Seconds a new connection has to send its A-ASSOCIATE-RQ.
ARTIM_TIMEOUT_S = 30.0
#: Seconds an established association may stay silent before we abort it.
NETWORK_TIMEOUT_S = 120.0
#: Seconds to wait for the peer to hang up after our last PDU (A-ABORT, -RJ, A-RELEASE-RP).
_DRAIN_S = 2.0


def storage_sop_classes() -> frozenset[str]:
    """The storage SOP classes pynetdicom knows (it tracks the standard), plus Verification."""
    from pynetdicom import AllStoragePresentationContexts

    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax}
    return frozenset(known | {VERIFICATION})


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off (observer: a failure only costs latency)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY: %s", exc)


class _Negotiation:
    """The acceptor's side of association negotiation (pure: no I/O)."""

    def __init__(self, receiver: ReceiverSettings) -> None:
        self.receiver = receiver
        self.allowed = frozenset(a.strip() for a in receiver.allowed_calling_aes)
        self.abstract_syntaxes = storage_sop_classes()
        self.transfer_syntaxes = frozenset([*map(str, AllTransferSyntaxes), *receiver.supported_transfer_syntaxes])

    def refusal(self, request: ul.AssociateRequest, active: int) -> tuple[tuple[int, int, int], str] | None:
        """Why the association must be rejected, as (result, source, reason) and a sentence; None to accept."""
        if not request.protocol_version & 1:
            return ul.REJECT_PROTOCOL_VERSION, f"protocol version {request.protocol_version} not supported"
        if request.application_context != ul.APPLICATION_CONTEXT:
            return ul.REJECT_APPLICATION_CONTEXT, f"application context {request.application_context!r} not supported"
        if self.allowed and request.calling_ae not in self.allowed:
            return ul.REJECT_CALLING_AE, (
                f"calling AE title {request.calling_ae!r} is not in receiver.allowed_calling_aes")
        if active >= self.receiver.max_associations:
            return ul.REJECT_BUSY, f"association limit {self.receiver.max_associations} reached"
        return None

    def contexts(self, request: ul.AssociateRequest) -> tuple[list[ul.ContextResult], dict[int, tuple[str, str]]]:
        """Answer every proposed context; return the answers and {context id: (abstract, transfer syntax)} accepted."""
        results: list[ul.ContextResult] = []
        accepted: dict[int, tuple[str, str]] = {}
        for proposed in request.contexts:
            abstract = proposed.abstract_syntax
            if abstract not in self.abstract_syntaxes and not abstract.startswith(STORAGE_ROOT):
                results.append(ul.ContextResult(proposed.context_id, ul.ABSTRACT_SYNTAX_NOT_SUPPORTED,
                                                proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""))
                continue
            chosen = next((ts for ts in proposed.transfer_syntaxes if ts in self.transfer_syntaxes), None)
            if chosen is None:
                results.append(ul.ContextResult(proposed.context_id, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                                                proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""))
                continue
            results.append(ul.ContextResult(proposed.context_id, ul.ACCEPTANCE, chosen))
            accepted[proposed.context_id] = (abstract, chosen)
        return results, accepted


class Association:
    """One connection, from A-ASSOCIATE-RQ to release or abort, served on its own thread."""

    def __init__(self, server: NativeEngine, sock: socket.socket, address: tuple[str, int]) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        self.peer: Peer | None = None
        self.max_send_pdu = 0
        self.accepted: dict[int, tuple[str, str]] = {}
        self._send_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ I/O

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def abort(self, reason: int = 0, *, drain: bool = False) -> None:
        """Send A-ABORT (best effort) and close the connection; the serving thread then ends.

        With ``drain`` (only from the serving thread), wait briefly for the
        peer to hang up, discarding what it still sends: closing a socket with
        unread data makes the kernel send a reset, and the peer may lose the
        A-ABORT that told it why.
        """
        try:
            self._send(ul.encode_abort(2, reason))
        except OSError:
            pass
        if drain and not self._closed:
            try:
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.settimeout(_DRAIN_S)
                deadline = time.monotonic() + _DRAIN_S
                while time.monotonic() < deadline and self.sock.recv(65536):
                    pass
            except OSError:
                pass
        self._shutdown()

    def _await_peer_close(self) -> None:
        """After A-ASSOCIATE-RJ or A-RELEASE-RP the requestor closes the connection (PS3.8 9.2).

        Waiting for it (a bounded time) rather than closing first keeps a
        reset from overtaking our last PDU.
        """
        try:
            self.sock.settimeout(_DRAIN_S)
            deadline = time.monotonic() + _DRAIN_S
            while time.monotonic() < deadline and self.sock.recv(65536):
                pass
        except OSError:
            pass

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ------------------------------------------------------------------ the association

    def run(self) -> None:
        """Serve the connection until it ends; never raises."""
        established = False
        try:
            established = self._negotiate()
            if established:
                self._serve()
        except ul.PeerClosed:
            pass
        except TimeoutError:
            log.warning("association from %s: no PDU in time; aborting", self._who())
            self.abort()
        except ul.ProtocolError as exc:
            log.warning("association from %s: protocol error, aborting: %s", self._who(), exc)
            self.abort(2, drain=True)
        except OSError as exc:
            if not self._closed:
                log.info("association from %s: connection lost: %s", self._who(), exc)
        except Exception:  # a broken association must not take the process down
            log.exception("association from %s failed unexpectedly; aborting", self._who())
            self.abort()
        finally:
            self._shutdown()
            self.sock.close()
            self.server._forget(self)
            self.server.events.closed(self, self.peer if established else None)

    def _who(self) -> str:
        ae = self.peer.calling_ae if self.peer else "?"
        return f"{ae} ({self.address[0]})"

    def _negotiate(self) -> bool:
        """Read the A-ASSOCIATE-RQ and accept or reject it; True when established."""
        self.sock.settimeout(ARTIM_TIMEOUT_S)
        pdu_type, body = ul.read_pdu(self.sock, HARD_PDU_LIMIT)
        if pdu_type != ul.A_ASSOCIATE_RQ:
            raise ul.ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}")
        request = ul.parse_associate_rq(body)
        local = self.sock.getsockname()
        self.peer = Peer(request.calling_ae, self.address[0] or None, request.called_ae, str(local[0]))
        negotiation = self.server.negotiation
        refusal = negotiation.refusal(request, self.server.active_count() - 1)
        if refusal is not None:
            (result, source, reason), why = refusal
            self._send(ul.encode_associate_rj(result, source, reason))
            self.server.events.rejected(self.peer, why)
            self._await_peer_close()
            return False
        results, self.accepted = negotiation.contexts(request)
        self.max_send_pdu = request.max_pdu_length
        self._send(ul.encode_associate_ac(
            request, results, max_pdu_length=MAX_PDU_BYTES,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID, implementation_version=IMPLEMENTATION_VERSION,
        ))
        self.server.events.established(self, self.peer)
        return True

    def _serve(self) -> None:
        """P-DATA until release or abort: assemble each message, answer it."""
        self.sock.settimeout(NETWORK_TIMEOUT_S)
        command_parts: list[memoryview] = []
        dataset_parts: list[memoryview] = []
        command: dimse.Command | None = None
        context_id = -1
        while True:
            pdu_type, body = ul.read_pdu(self.sock, HARD_PDU_LIMIT)
            if pdu_type == ul.A_RELEASE_RQ:
                self._send(ul.encode_release_rp())
                self._await_peer_close()
                return
            if pdu_type == ul.A_ABORT:
                log.info("association from %s aborted by the peer", self._who())
                return
            if pdu_type != ul.P_DATA_TF:
                raise ul.ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} in an established association")
            for pdv_context, control, fragment in ul.iter_pdvs(body):
                if pdv_context not in self.accepted:
                    raise ul.ProtocolError(f"P-DATA on presentation context {pdv_context}, which was not accepted")
                if control & ul.COMMAND:
                    if command is not None:
                        raise ul.ProtocolError("a new command started before the data set of the previous one")
                    command_parts.append(fragment)
                    context_id = pdv_context
                    if control & ul.LAST_FRAGMENT:
                        command = dimse.parse_command(b"".join(command_parts))
                        command_parts = []
                        if not command.has_dataset:
                            self._answer(command, context_id, b"")
                            command = None
                else:
                    if command is None:
                        raise ul.ProtocolError("data set fragment without a command")
                    if pdv_context != context_id:
                        raise ul.ProtocolError(
                            f"data set on presentation context {pdv_context}, its command on {context_id}")
                    dataset_parts.append(fragment)
                    if control & ul.LAST_FRAGMENT:
                        self._answer(command, context_id, b"".join(dataset_parts))
                        dataset_parts = []
                        command = None

    def _answer(self, command: dimse.Command, context_id: int, dataset: bytes) -> None:
        """Run one DIMSE request and send its response."""
        abstract, syntax = self.accepted[context_id]
        if command.command_field == dimse.C_ECHO_RQ:
            response = dimse.c_echo_rsp(command.message_id, command.affected_sop_class_uid or abstract)
        elif command.command_field == dimse.C_STORE_RQ:
            assert self.peer is not None
            outcome = self.server.service.store(self, StoreRequest(
                dataset=dataset,
                transfer_syntax_uid=syntax,
                sop_class_uid=command.affected_sop_class_uid or None,
                sop_instance_uid=command.affected_sop_instance_uid or None,
                source=Source(ae_title=self.peer.calling_ae, address=self.address[0]),
            ))
            response = dimse.c_store_rsp(command.message_id, command.affected_sop_class_uid or abstract,
                                         command.affected_sop_instance_uid, outcome.status, outcome.comment)
        else:
            raise ul.ProtocolError(f"DIMSE command 0x{command.command_field:04X} is not served here")
        for pdu in ul.encode_pdata(context_id, ul.COMMAND, response, self.max_send_pdu):
            self._send(pdu)


class NativeEngine:
    """Accepts connections (or is handed them) and serves each association on its own thread."""

    def __init__(self, receiver: ReceiverSettings, service: StoreService, events: AssociationEvents, *,
                 listen: bool = True) -> None:
        self.service = service
        self.events = events
        self.negotiation = _Negotiation(receiver)
        self._lock = threading.Lock()
        self._associations: set[Association] = set()
        self._stop = threading.Event()
        self._serving = threading.Event()
        self.listener: socket.socket | None = None
        self._address = (receiver.host, receiver.port)
        if listen:
            family = socket.AF_INET6 if ":" in receiver.host else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((receiver.host, receiver.port))
            self.listener.listen(128)
            host, port = self.listener.getsockname()[:2]
            self._address = (str(host), int(port))

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        if self.listener is None:
            raise RuntimeError("this engine does not listen; connections are handed to adopt()")
        self._serving.set()
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                if not selector.select(timeout=0.2):
                    continue
                try:
                    client, address = self.listener.accept()
                except OSError:
                    continue
                self.adopt(client, (str(address[0]), int(address[1])))
        self._serving.clear()

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None:
        """Serve a connection (accepted here or by the dispatcher) on a new thread."""
        set_nodelay(client)
        association = Association(self, client, address)
        with self._lock:
            self._associations.add(association)
        thread = threading.Thread(target=association.run, name=f"dicomflow-assoc-{address[0]}:{address[1]}",
                                  daemon=True)
        thread.start()

    def _forget(self, association: Association) -> None:
        with self._lock:
            self._associations.discard(association)

    def active_count(self) -> int:
        with self._lock:
            return len(self._associations)

    def active_associations(self) -> int:
        return self.active_count()

    def shutdown(self) -> None:
        """Stop accepting new connections (:meth:`serve_forever` returns)."""
        self._stop.set()

    def abort_all(self) -> None:
        for association in self._snapshot():
            log.warning("aborting association from %s still running at shutdown", association._who())
            association.abort()

    def _snapshot(self) -> Iterable[Association]:
        with self._lock:
            return list(self._associations)

    def close(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.close()


__all__ = ["MAX_PDU_BYTES", "Association", "NativeEngine", "storage_sop_classes"]
