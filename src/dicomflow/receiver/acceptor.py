"""The native engine's association: a DICOM acceptor for storage (C-STORE) and verification (C-ECHO).

(Its listeners: :mod:`~dicomflow.receiver.native`; what is accepted: :mod:`~dicomflow.receiver.negotiation`.)

Why not pynetdicom here: pynetdicom turns every command set into pydicom
datasets and runs two polling loops per association that sleep a
millisecond between checks. With a handler that does nothing it tops out
near 250 C-STOREs/s per process on a two-core machine, under what Orthanc
does while also indexing. This acceptor does only what a storage SCP needs
(PS3.8 Upper Layer, PS3.7 C-STORE / C-ECHO) with blocking sockets, one
thread per association that sleeps in ``recv`` and never polls, and command
sets encoded with :mod:`struct` (:mod:`~dicomflow.receiver.dimse`).

Per association: read the A-ASSOCIATE-RQ (whole, within
``receiver.artim_timeout_s``), refuse it (calling AE not allowed, wrong
application context or protocol version, no association slot free:
:mod:`~dicomflow.receiver.limits`) or accept each presentation context
whose abstract syntax is a storage SOP class or Verification, with the
first transfer syntax *the sender* proposed that we know: instances are
kept as sent. Then serve P-DATA until A-RELEASE-RQ (answered), A-ABORT or
the peer closing. Each data set streams to its file as its fragments
arrive (:mod:`~dicomflow.receiver.reception`), so an association holds at
most one PDU, one command set and the first fragments of one data set in
memory.

Every wait for a PDU has a deadline for the *whole* PDU (a peer dripping
one byte a second does not keep it alive): ``receiver.idle_timeout_s``,
capped by ``receiver.max_association_s`` from the association's start when
that is set. Past it, or past ``receiver.max_dataset_bytes``, we abort.
Anything malformed or out of order is a protocol error, answered with
A-ABORT (one warning line, no traceback).

C-FIND, C-GET, C-MOVE (:mod:`~dicomflow.receiver.retrieve`) are served on this thread. Not done: asynchronous
operations windows, extended negotiation. TLS: a handshake before the A-ASSOCIATE-RQ (:mod:`~dicomflow.receiver.tls`).
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from typing import Protocol

from dicomflow.audit import events as audit
from dicomflow.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from dicomflow.ingest.ingestor import Source
from dicomflow.ingest.service import StoreService
from dicomflow.ingest.transfer_log import Peer, SessionKey
from dicomflow.qr.retrieve import Retriever
from dicomflow.qr.service import FindService
from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.events import AssociationEvents
from dicomflow.receiver.find import IdentifierBuffer
from dicomflow.receiver.identity import IdentityPolicy
from dicomflow.receiver.limits import Slot, SlotLimiter, SlotRefused
from dicomflow.receiver.negotiation import REFUSAL_KINDS, REJECT_USER_IDENTITY, Negotiation, user_identity
from dicomflow.receiver.reception import DatasetTooLarge, Reception
from dicomflow.receiver.retrieve import answer_query
from dicomflow.receiver.tls import ServerTls, TlsRefused
from dicomflow.settings import ReceiverSettings

log = logging.getLogger(__name__)

#: Largest PDU we announce; typical CT/MR images arrive in one PDU.
MAX_PDU_BYTES = 1024 * 1024
#: Largest PDU we read at all (a memory bound): what we announced plus a little
#: slack for peers that count the PDV headers differently.
PDU_READ_LIMIT = MAX_PDU_BYTES + 16 * 1024
#: Largest command set (they are a few hundred bytes).
COMMAND_LIMIT = 64 * 1024
#: Seconds to wait for the peer to hang up after our last PDU (A-ABORT, -RJ, A-RELEASE-RP).
_DRAIN_S = 2.0


class AssociationHost(Protocol):
    """What an association needs of the engine that accepted it (:class:`~dicomflow.receiver.native.NativeEngine`)."""

    receiver: ReceiverSettings
    service: StoreService
    events: AssociationEvents
    #: Association slots shared with the receiver's other processes.
    limiter: SlotLimiter
    negotiation: Negotiation
    identity: IdentityPolicy
    tls: ServerTls | None
    finder: FindService | None  # C-FIND on the index (None: no queries answered)
    retriever: Retriever | None  # C-GET / C-MOVE ([qr] enabled; None: not served)

    def forget(self, association: Association) -> None:
        """The association ended (called once, from its own thread)."""


class Association:
    """One connection, from A-ASSOCIATE-RQ to release or abort, served on its own thread."""

    def __init__(self, server: AssociationHost, sock: socket.socket, address: tuple[str, int], *, secure: bool = False) -> None:
        self.server = server
        self.sock = sock
        self.address = address
        #: Arrived on a TLS listener: the handshake runs first, on this thread.
        self.secure = secure
        self.peer: Peer | None = None
        #: This association in the transfer log (and to the receiver's events).
        self.session = SessionKey("association")
        self.max_send_pdu = 0
        self.accepted: dict[int, tuple[str, str]] = {}
        self._send_lock = threading.Lock()
        self._closed = False
        self._started = time.monotonic()
        self._slot: Slot | None = None
        self._slot_lock = threading.Lock()
        #: The data set being received, if any (discarded if the association ends first).
        self.reception: Reception | None = None
        self.identifier: IdentifierBuffer | None = None
        self.sending: dict[str, list[tuple[int, str]]] = {}  # {SOP class: [(context, syntax)]} C-GET sends on
        self.retriever = server.retriever

    # ------------------------------------------------------------------ I/O

    def _send(self, data: bytes | bytearray | memoryview) -> None:
        with self._send_lock:
            self.sock.sendall(data)

    def abort(self, reason: int = 0, *, drain: bool = False) -> None:
        """Send A-ABORT (best effort) and close the connection; the serving thread then ends.

        With ``drain`` (only from the serving thread), wait briefly for the
        peer to hang up, discarding what it still sends: closing a socket with
        unread data makes the kernel send a reset, and the peer may lose the
        A-ABORT that told it why.

        The association's slot is given back first: a peer told of the abort
        may connect again at once, and must find the slot free.
        """
        self._release_slot()
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

    def _release_slot(self) -> None:
        """Give the association slot back to the limiter (once, whichever thread asks first)."""
        with self._slot_lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            self.server.limiter.release(slot)

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
            if self.secure and not self._handshake():
                return
            established = self._negotiate()
            if established:
                self._serve()
        except ul.PeerClosed:
            pass
        except TimeoutError:
            kind, why = self._timeout_reason(established)
            log.warning("association from %s: %s; aborting", self._who(), why)
            self.server.events.aborted(self.session, kind)
            self.abort()
        except DatasetTooLarge as exc:
            log.warning("association from %s: %s; aborting, partial data set removed", self._who(), exc)
            self._audit_too_large(exc)
            self.server.events.aborted(self.session, "dataset-too-large")
            self.abort(0, drain=True)
        except ul.ProtocolError as exc:
            log.warning("association from %s: protocol error, aborting: %s", self._who(), exc)
            self.server.events.aborted(self.session, "protocol-error")
            self.abort(2, drain=True)
        except OSError as exc:
            if not self._closed:
                log.info("association from %s: connection lost: %s", self._who(), exc)
        except Exception:  # a broken association must not take the process down
            log.exception("association from %s failed unexpectedly; aborting", self._who())
            self.abort()
        finally:
            if self.reception is not None:
                self.reception.discard()
                self.reception = None
            self._release_slot()
            self._shutdown()
            self.sock.close()
            self.server.forget(self)
            self.server.events.closed(self.session, self.peer if established else None)

    def _timeout_reason(self, established: bool) -> tuple[str, str]:
        rs = self.server.receiver
        if not established:
            return "artim-timeout", f"no complete A-ASSOCIATE-RQ within {rs.artim_timeout_s:g} s (receiver.artim_timeout_s)"
        if rs.max_association_s and time.monotonic() - self._started >= rs.max_association_s - 0.01:
            return "duration", f"association lasted {rs.max_association_s:g} s (receiver.max_association_s)"
        return "idle-timeout", f"no complete PDU within {rs.idle_timeout_s:g} s (receiver.idle_timeout_s)"

    def _deadline(self, wait_s: float) -> float:
        """When the next PDU must have arrived whole: ``wait_s`` from now, capped by max_association_s."""
        deadline = time.monotonic() + wait_s
        cap = self.server.receiver.max_association_s
        return min(deadline, self._started + cap) if cap else deadline

    def _audit_too_large(self, exc: DatasetTooLarge) -> None:
        """An instance refused for its size: a failure in the association's Instances Transferred event."""
        if self.peer is None:
            return
        service = self.server.service
        service.transfers.failed(self.session, tenant=service.ingestor.tenants.resolve(None, self.peer.calling_ae),
                                 study_uid=None, outcome=audit.MAJOR_FAILURE, reason=str(exc), sop_class_uid=None)

    def _handshake(self) -> bool:
        """TLS first (PS3.15 B.1): True when the connection may go on to the A-ASSOCIATE-RQ."""
        tls = self.server.tls
        assert tls is not None
        try:
            self.sock = tls.accept(self.sock)
        except TlsRefused as refused:
            self._closed = True
            self.server.events.tls_refused(self.address[0], str(refused), refused.kind)
            return False
        return True

    def _who(self) -> str:
        ae = self.peer.calling_ae if self.peer else "?"
        return f"{ae} ({self.address[0]})"

    def _negotiate(self) -> bool:
        """Read the A-ASSOCIATE-RQ and accept or reject it; True when established."""
        artim = self._deadline(self.server.receiver.artim_timeout_s)
        pdu_type, body = ul.read_pdu(self.sock, PDU_READ_LIMIT, deadline=artim)
        if pdu_type != ul.A_ASSOCIATE_RQ:
            raise ul.ProtocolError(f"expected A-ASSOCIATE-RQ, got PDU type 0x{pdu_type:02X}")
        request = ul.parse_associate_rq(body)
        local = self.sock.getsockname()
        self.peer = Peer(request.calling_ae, self.address[0] or None, request.called_ae, str(local[0]))
        negotiation = self.server.negotiation
        refusal = negotiation.refusal(request)
        kind = REFUSAL_KINDS.get(refusal[0], "other") if refusal is not None else ""
        verdict = self.server.identity.check(user_identity(request))
        self.peer = dataclasses.replace(self.peer, user=verdict.username)
        if refusal is None and not verdict.ok:
            refusal, kind = (REJECT_USER_IDENTITY, verdict.reason), "user-identity"
        if refusal is None:
            try:
                self._slot = self.server.limiter.acquire(request.calling_ae)
            except SlotRefused as busy:
                refusal, kind = (ul.REJECT_BUSY, str(busy)), busy.kind
        if refusal is not None:
            (result, source, reason), why = refusal
            self._send(ul.encode_associate_rj(result, source, reason))
            self.server.events.rejected(self.peer, why, kind)
            self._await_peer_close()
            return False
        results, self.accepted = negotiation.contexts(request)
        roles, self.sending = negotiation.roles(request, self.accepted)
        self.max_send_pdu = request.max_pdu_length
        self._send(ul.encode_associate_ac(
            request, results, max_pdu_length=MAX_PDU_BYTES,
            implementation_class_uid=IMPLEMENTATION_CLASS_UID, implementation_version=IMPLEMENTATION_VERSION,
            extra_user_items=verdict.response_item, role_items=roles,
        ))
        self.server.events.established(self.session, self.peer)
        return True

    def _serve(self) -> None:
        """P-DATA until release or abort: assemble each command, stream each data set, answer."""
        idle = self.server.receiver.idle_timeout_s
        command_parts: list[bytes] = []
        command_size = 0
        command: dimse.Command | None = None
        context_id = -1
        while True:
            pdu_type, body = self._read_pdu(idle)
            if pdu_type == ul.A_RELEASE_RQ:
                if command is not None or command_parts:
                    raise ul.ProtocolError("A-RELEASE-RQ in the middle of a DIMSE message")
                # The slot first: a requestor told of the release may associate again at once.
                self._release_slot()
                self._send(ul.encode_release_rp())
                self._await_peer_close()
                return
            if pdu_type == ul.A_ABORT:
                log.info("association from %s aborted by the peer", self._who())
                self._release_slot()
                return
            if pdu_type != ul.P_DATA_TF:
                raise ul.ProtocolError(f"PDU type 0x{pdu_type:02X} is not allowed in an established association")
            for pdv_context, control, fragment in ul.iter_pdvs(body):
                if pdv_context not in self.accepted:
                    raise ul.ProtocolError(f"P-DATA on presentation context {pdv_context}, which was not accepted")
                if control & ul.COMMAND:
                    if command is not None:
                        raise ul.ProtocolError("a new command started before the data set of the previous one")
                    if command_parts and pdv_context != context_id:
                        raise ul.ProtocolError("command fragments on two presentation contexts")
                    command_size += len(fragment)
                    if command_size > COMMAND_LIMIT:
                        raise ul.ProtocolError(f"command set longer than {COMMAND_LIMIT} bytes")
                    command_parts.append(bytes(fragment))
                    context_id = pdv_context
                    if control & ul.LAST_FRAGMENT:
                        command = dimse.parse_command(b"".join(command_parts))
                        command_parts, command_size = [], 0
                        if not command.has_dataset:
                            self._answer(command, context_id)
                            command = None
                        else:
                            self._begin(command, context_id)
                else:
                    if command is None or (self.reception is None and self.identifier is None):
                        raise ul.ProtocolError("data set fragment without a command")
                    if pdv_context != context_id:
                        raise ul.ProtocolError(f"data set on presentation context {pdv_context}, its command on {context_id}")
                    last = bool(control & ul.LAST_FRAGMENT)
                    if self.identifier is not None:
                        self.identifier.feed(fragment)
                    elif self.reception is not None:
                        self.reception.feed(fragment, last)
                    if last:
                        self._answer(command, context_id)
                        command = None

    def _read_pdu(self, idle: float) -> tuple[int, bytes]:  # the next PDU; a hook receiver/timed.py times
        return ul.read_pdu(self.sock, PDU_READ_LIMIT, deadline=self._deadline(idle))

    def _begin(self, command: dimse.Command, context_id: int) -> None:
        """A command with a data set: C-STORE starts a reception, a query an identifier; anything else is not served."""
        field = command.command_field
        if field in dimse.QUERY_REQUESTS and (self.server.finder if field == dimse.C_FIND_RQ else self.retriever) is not None:
            self.identifier = IdentifierBuffer()
            return
        if command.command_field != dimse.C_STORE_RQ:
            raise ul.ProtocolError(f"DIMSE command 0x{command.command_field:04X} is not served here")
        assert self.peer is not None
        _abstract, syntax = self.accepted[context_id]
        self.reception = Reception(
            self.server.service, self.session, transfer_syntax_uid=syntax, sop_class_uid=command.affected_sop_class_uid or None,
            sop_instance_uid=command.affected_sop_instance_uid or None,
            source=Source(ae_title=self.peer.calling_ae, address=self.address[0]),
            max_bytes=self.server.receiver.max_dataset_bytes,
        )

    def _answer(self, command: dimse.Command, context_id: int) -> None:
        """Finish one DIMSE request (the data set, if any, received whole) and send its response."""
        abstract, _syntax = self.accepted[context_id]
        if command.command_field == dimse.C_ECHO_RQ:
            response = dimse.c_echo_rsp(command.message_id, command.affected_sop_class_uid or abstract)
        elif command.command_field == dimse.C_STORE_RQ and self.reception is not None:
            reception, self.reception = self.reception, None
            outcome = reception.finish()
            response = dimse.c_store_rsp(command.message_id, command.affected_sop_class_uid or abstract,
                                         command.affected_sop_instance_uid, outcome.status, outcome.comment)
        elif command.command_field in dimse.QUERY_REQUESTS or command.command_field == dimse.C_CANCEL_RQ:
            answer_query(self, command, context_id)
            return
        else:
            raise ul.ProtocolError(f"DIMSE command 0x{command.command_field:04X} is not served here")
        for pdu in ul.encode_pdata(context_id, ul.COMMAND, response, self.max_send_pdu):
            self._send(pdu)


__all__ = ["COMMAND_LIMIT", "MAX_PDU_BYTES", "PDU_READ_LIMIT", "Association", "AssociationHost"]
