"""C-GET and C-MOVE on the native engine (PS3.4 C.4.2, C.4.3): the request answered, its sub-operations run.

The identifier arrives like a C-FIND's (:class:`~dicomflow.receiver.find.IdentifierBuffer`);
what the engines share comes from :mod:`dicomflow.qr`: the unique keys and
the caller's tenant (:meth:`~dicomflow.qr.retrieve.Retriever.start`), the
reads and transcoding (:meth:`~dicomflow.qr.retrieve.Retriever.fetch`), the
audit (``begin`` / ``finish``). The sub-operations themselves are
:mod:`~dicomflow.receiver.suboperations`'.

- **C-GET**: the C-STOREs go on the requestor's association, on the storage
  contexts whose SCP role it proposed and we granted
  (:meth:`~dicomflow.receiver.negotiation.Negotiation.roles`); a C-CANCEL-RQ
  is read between them, with the C-STORE-RSPs.
- **C-MOVE**: the Move Destination is looked up in ``[qr.destinations]``
  (unknown, unreachable or refusing: 0xA801); a new association proposes
  the stored syntaxes and the uncompressed ones (:mod:`dicomflow.qr.proposal`);
  the requestor's association is watched for a C-CANCEL-RQ between
  sub-operations, without waiting.

The final response: Success; Cancel (0xFE00) with the remaining count;
0xB000 when some sub-operations failed or warned, 0xA702 when all failed,
the failed SOP Instance UIDs in its identifier (Failed SOP Instance UID List).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from pydicom.dataset import Dataset

from dicomflow.qr.parties import parties
from dicomflow.qr.proposal import destination_syntaxes
from dicomflow.qr.results import decode_identifier, encode_identifier
from dicomflow.qr.retrieve import Retriever, Transfer
from dicomflow.qr.retrieve_keys import MODEL_OF, UNABLE_TO_PROCESS, RetrieveRefused
from dicomflow.receiver import dimse
from dicomflow.receiver import suboperations as subops
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.find import CancelWatch, FindHost, answer_find
from dicomflow.receiver.requestor import AssociationRefused, Outgoing

log = logging.getLogger(__name__)

#: PS3.4 C.4.2.1.5: Refused: Move Destination unknown.
DESTINATION_UNKNOWN = 0xA801
#: Refused: out of resources, unable to perform sub-operations (every sub-operation failed).
ALL_FAILED = 0xA702
#: Sub-operations complete, one or more failures or warnings.
SOME_FAILED = 0xB000
CANCEL = 0xFE00
PENDING = 0xFF00
#: The sub-operation counts are US (PS3.7 9.3.3.2): no more instances per request.
MAX_SUBOPERATIONS = 0xFFFF


class RetrieveHost(FindHost, Protocol):
    """What C-GET / C-MOVE need of the association besides what C-FIND does."""

    #: {SOP class: [(context id, syntax)]} a C-GET may send C-STOREs on (granted SCP role to the requestor).
    sending: dict[str, list[tuple[int, str]]]
    retriever: Retriever | None


@dataclass
class _Responder:
    """Writes the C-GET-RSPs / C-MOVE-RSPs of one request on the requestor's association."""

    host: FindHost
    field: int
    message_id: int
    sop_class: str
    context_id: int
    syntax: str

    def send(self, status: int, counts: dimse.Counts | None, *, comment: str | None = None,
             failed: list[str] | None = None) -> None:
        identifier = b""
        if failed:
            ds = Dataset()
            ds.FailedSOPInstanceUIDList = failed
            identifier = encode_identifier(ds, self.syntax)
        rsp = dimse.c_retrieve_rsp(self.field, self.message_id, self.sop_class, status, counts,
                                   has_identifier=bool(identifier), error_comment=comment)
        pdus = ul.encode_pdata(self.context_id, ul.COMMAND, rsp, self.host.max_send_pdu)
        if identifier:
            pdus += ul.encode_pdata(self.context_id, 0, identifier, self.host.max_send_pdu)
        self.host._send(b"".join(pdus))

    def pending(self, counts: dimse.Counts) -> None:
        self.send(PENDING, counts)

    def final(self, transfer: Transfer) -> None:
        failed = list(transfer.failed)
        if transfer.cancelled:
            done = len(transfer.completed) + len(transfer.failed) + len(transfer.warned)
            self.send(CANCEL, subops.counts(transfer, len(transfer.items) - done), failed=failed)
        elif failed or transfer.warned:
            status = ALL_FAILED if len(failed) == len(transfer.items) else SOME_FAILED
            self.send(status, subops.counts(transfer, None), failed=failed)
        else:
            self.send(0, subops.counts(transfer, None))


def answer_query(host: RetrieveHost, command: dimse.Command, context_id: int) -> None:
    """A C-FIND, C-GET or C-MOVE request whose identifier arrived whole (or a C-CANCEL-RQ), answered."""
    if command.command_field in (dimse.C_GET_RQ, dimse.C_MOVE_RQ) and host.retriever is not None:
        answer_retrieve(host, host.retriever, command, context_id)
    else:
        answer_find(host, command, context_id)


def answer_retrieve(host: RetrieveHost, retriever: Retriever, command: dimse.Command, context_id: int) -> None:
    """Serve one C-GET-RQ or C-MOVE-RQ: every response sent, the last one final (see the module doc)."""
    identifier, host.identifier = host.identifier, None
    abstract, syntax = host.accepted[context_id]
    move = command.command_field == dimse.C_MOVE_RQ
    service = "C-MOVE" if move else "C-GET"
    respond = _Responder(host, dimse.C_MOVE_RSP if move else dimse.C_GET_RSP, command.message_id,
                         command.affected_sop_class_uid or abstract, context_id, syntax)
    peer = host.peer
    assert peer is not None
    address = retriever.destination(command.move_destination) if move else None
    if move and address is None:
        log.warning("C-MOVE from %s: Move Destination %r is not in [qr.destinations]", peer.calling_ae,
                    command.move_destination)
        respond.send(DESTINATION_UNKNOWN, None, comment="Move Destination unknown")
        return
    who = parties(retriever.settings.worker_node_id, peer.called_ae, peer.calling_ae, host.address[0] or None,
                  peer.user, command.move_destination if move else None,
                  f"{address[0]}:{address[1]}" if address is not None else None)
    if identifier is None:
        respond.send(UNABLE_TO_PROCESS, None, comment=f"{service}-RQ without an identifier")
        return
    try:
        ds = decode_identifier(identifier.value(), syntax)
    except Exception as exc:  # noqa: BLE001 - an undecodable identifier is a status, never an exception
        log.warning("%s from %s: cannot read the identifier: %s", service, peer.calling_ae, exc)
        respond.send(UNABLE_TO_PROCESS, None, comment="cannot decode the identifier")
        return
    try:
        transfer = retriever.start(service, ds, MODEL_OF[abstract], who)
    except RetrieveRefused as refused:
        log.warning("%s from %s refused: %s", service, peer.calling_ae, refused.reason)
        respond.send(refused.status, None, comment=refused.reason)
        return
    if not transfer.items:
        respond.send(0, dimse.Counts())
        return
    if len(transfer.items) > MAX_SUBOPERATIONS:  # the counts are US; the same answer as pynetdicom's engine
        respond.send(0xC516 if move else 0xC416, None, comment=f"more than {MAX_SUBOPERATIONS} instances match; "
                     "retrieve by series")
        return
    wait_s = host.server.receiver.idle_timeout_s
    if move:
        assert address is not None
        _move(host, retriever, transfer, respond, command, address, wait_s)
    else:
        _get(host, retriever, transfer, respond, command, wait_s)


def _get(host: RetrieveHost, retriever: Retriever, transfer: Transfer, respond: _Responder,
         command: dimse.Command, wait_s: float) -> None:
    cancelled = [False]

    def on_other(other: dimse.Command) -> None:
        if other.command_field != dimse.C_CANCEL_RQ:
            raise ul.ProtocolError(f"DIMSE command 0x{other.command_field:04X} during a C-GET "
                                   "(asynchronous operations are not negotiated)")
        if other.message_id_responded_to == command.message_id:
            cancelled[0] = True

    link = subops.Link(host.sock, host._send, host.max_send_pdu, host.sending, wait_s, on_other=on_other)
    retriever.begin(transfer)
    try:
        subops.run(retriever, transfer, link, subops.Progress(respond.pending), lambda: cancelled[0])
    finally:
        retriever.finish(transfer)
    respond.final(transfer)


def _move(host: RetrieveHost, retriever: Retriever, transfer: Transfer, respond: _Responder,
          command: dimse.Command, address: tuple[str, int], wait_s: float) -> None:
    destination = command.move_destination
    proposed = destination_syntaxes((i.sop_class_uid, i.transfer_syntax_uid) for i in transfer.items)
    try:
        outgoing = Outgoing.open(address, calling_ae=host.server.receiver.ae_title, called_ae=destination,
                                 contexts=proposed, timeout_s=retriever.settings.qr.move_connect_timeout_s,
                                 wait_s=wait_s)
    except AssociationRefused as refused:
        log.warning("C-MOVE from %s: destination %s: %s", transfer.parties.requestor_ae, destination, refused)
        respond.send(DESTINATION_UNKNOWN, None, comment=f"cannot associate with {destination}")
        return
    contexts: dict[str, list[tuple[int, str]]] = {}
    for cid, (abstract, ts) in sorted(outgoing.accepted.items()):
        contexts.setdefault(abstract, []).append((cid, ts))
    assert host.peer is not None
    link = subops.Link(outgoing.sock, outgoing.sock.sendall, outgoing.max_send_pdu, contexts, wait_s,
                       move_originator=(host.peer.calling_ae, command.message_id))
    watch = CancelWatch(host, command.message_id, wait_s)
    requestor_broke = [False]

    def is_cancelled() -> bool:
        try:
            return watch()
        except BaseException:
            requestor_broke[0] = True
            raise

    retriever.begin(transfer)
    released = False
    try:
        subops.run(retriever, transfer, link, subops.Progress(respond.pending), is_cancelled)
        outgoing.release()
        released = True
    except (OSError, TimeoutError, ul.ProtocolError, ul.PeerClosed) as exc:
        if requestor_broke[0]:
            raise  # the requestor went away or broke the protocol: nobody to answer
        log.warning("C-MOVE from %s: destination %s broke off: %s", transfer.parties.requestor_ae, destination, exc)
        for item in transfer.items:
            if item.sop_uid not in transfer.completed and item.sop_uid not in transfer.warned:
                transfer.result(item.sop_uid, None, f"the association with {destination} broke: {exc}")
    finally:
        if not released:
            outgoing.abort()
        retriever.finish(transfer)
    respond.final(transfer)


__all__ = ["ALL_FAILED", "CANCEL", "DESTINATION_UNKNOWN", "SOME_FAILED", "RetrieveHost", "answer_query",
           "answer_retrieve"]
