"""C-FIND on the native engine (PS3.7 9.1.2, PS3.4 C.4.1): the identifier collected, the query served, C-CANCEL heard.

The association hands a C-FIND-RQ's identifier here once its last fragment
arrived (:class:`IdentifierBuffer`, bounded by :data:`IDENTIFIER_LIMIT`);
:func:`serve_find` asks :class:`~dicomflow.qr.service.FindService` and sends
each response (command and identifier in one write). Between two responses
it looks, without waiting, whether the requestor sent something: a
C-CANCEL-RQ for this request stops the matches (final status 0xFE00); an
A-ABORT ends the association; anything else is a protocol error (no
asynchronous operations are negotiated, so nothing else may come now).

The caller's tenant is the one its C-STOREs would get without a tenant tag:
``ingest.ae_tenants`` of the calling AE title, else ``storage.default_tenant``.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from typing import Protocol

from dicomflow.ingest.service import StoreService
from dicomflow.ingest.transfer_log import Peer
from dicomflow.qr.exceptions import UNABLE_TO_PROCESS
from dicomflow.qr.service import FindRequest, FindService
from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul
from dicomflow.settings import ReceiverSettings

#: Largest identifier accepted (they are a few hundred bytes; a memory bound).
IDENTIFIER_LIMIT = 256 * 1024


class _Server(Protocol):
    @property
    def receiver(self) -> ReceiverSettings: ...

    @property
    def service(self) -> StoreService: ...

    @property
    def finder(self) -> FindService | None: ...


class FindHost(Protocol):
    """What C-FIND needs of the association (:class:`~dicomflow.receiver.acceptor.Association`)."""

    sock: socket.socket
    accepted: dict[int, tuple[str, str]]
    max_send_pdu: int
    address: tuple[str, int]
    peer: Peer | None
    #: The identifier of the C-FIND-RQ being received, if any.
    identifier: IdentifierBuffer | None

    @property
    def server(self) -> _Server: ...

    def _send(self, data: bytes | bytearray | memoryview) -> None: ...


class IdentifierBuffer:
    """The fragments of one C-FIND-RQ's identifier."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def feed(self, fragment: memoryview | bytes) -> None:
        """Keep one fragment.

        Raises:
            ProtocolError: the identifier grows past :data:`IDENTIFIER_LIMIT`.
        """
        self.size += len(fragment)
        if self.size > IDENTIFIER_LIMIT:
            raise ul.ProtocolError(f"C-FIND identifier longer than {IDENTIFIER_LIMIT} bytes")
        self.parts.append(bytes(fragment))

    def value(self) -> bytes:
        return b"".join(self.parts)


class CancelWatch:
    """Looks for the C-CANCEL-RQ of one request between responses, never waiting for it."""

    def __init__(self, host: FindHost, message_id: int, wait_s: float) -> None:
        self.host = host
        self.message_id = message_id
        self.wait_s = wait_s
        self.seen = False
        self._reader = dimse.CommandReader("while a C-FIND is answered")

    def _readable(self) -> bool:
        sock = self.host.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable)

    def __call__(self) -> bool:
        """True once this request's C-CANCEL-RQ arrived.

        Raises:
            PeerClosed: the requestor aborted or closed the connection.
            ProtocolError: it sent anything but a C-CANCEL-RQ of this request.
        """
        while not self.seen and self._readable():
            for command in self._reader.read(self.host.sock, 64 * 1024, time.monotonic() + self.wait_s):
                self._command(command)
        return self.seen

    def _command(self, command: dimse.Command) -> None:
        if command.command_field != dimse.C_CANCEL_RQ:
            raise ul.ProtocolError(f"DIMSE command 0x{command.command_field:04X} while a C-FIND is answered "
                                   "(asynchronous operations are not negotiated)")
        if command.message_id_responded_to == self.message_id:
            self.seen = True  # a C-CANCEL of another (finished) request is ignored


def answer_find(host: FindHost, command: dimse.Command, context_id: int) -> None:
    """A C-FIND-RQ whose identifier arrived whole, answered; a C-CANCEL-RQ after its final response ignored."""
    identifier, host.identifier = host.identifier, None
    finder = host.server.finder
    if command.command_field == dimse.C_CANCEL_RQ:
        return  # a C-CANCEL after the final response: nothing left to cancel (PS3.7 9.3.2.3)
    if identifier is None or finder is None:  # a C-FIND-RQ without an identifier still gets its answer
        abstract, _syntax = host.accepted[context_id]
        rsp = dimse.c_find_rsp(command.message_id, command.affected_sop_class_uid or abstract, UNABLE_TO_PROCESS,
                               has_identifier=False, error_comment="C-FIND-RQ without an identifier")
        host._send(b"".join(ul.encode_pdata(context_id, ul.COMMAND, rsp, host.max_send_pdu)))
        return
    assert host.peer is not None
    tenant = host.server.service.ingestor.tenants.resolve(None, host.peer.calling_ae)
    serve_find(host, finder, command, context_id, identifier.value(), tenant=tenant,
               calling_ae=host.peer.calling_ae, calling_address=host.address[0] or None, user=host.peer.user,
               wait_s=host.server.receiver.idle_timeout_s)


def serve_find(host: FindHost, finder: FindService, command: dimse.Command, context_id: int, identifier: bytes, *,
               tenant: str, calling_ae: str, calling_address: str | None, user: str | None, wait_s: float) -> None:
    """Answer one C-FIND-RQ whose identifier arrived whole: every response sent, the last one final."""
    abstract, syntax = host.accepted[context_id]
    sop_class = command.affected_sop_class_uid or abstract
    request = FindRequest(sop_class_uid=sop_class, identifier=identifier, transfer_syntax=syntax, tenant=tenant,
                          calling_ae=calling_ae, calling_address=calling_address, user=user)
    watch = CancelWatch(host, command.message_id, wait_s)
    for response in finder.find(request, watch):
        has_identifier = response.identifier is not None
        rsp = dimse.c_find_rsp(command.message_id, sop_class, response.status, has_identifier=has_identifier,
                               error_comment=response.comment)
        pdus = ul.encode_pdata(context_id, ul.COMMAND, rsp, host.max_send_pdu)
        if response.identifier is not None:
            pdus += ul.encode_pdata(context_id, 0, response.identifier.encode(syntax), host.max_send_pdu)
        host._send(b"".join(pdus))


__all__ = ["IDENTIFIER_LIMIT", "CancelWatch", "FindHost", "IdentifierBuffer", "answer_find", "serve_find"]
