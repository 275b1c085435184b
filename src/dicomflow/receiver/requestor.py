"""The requestor's side of the Upper Layer (PS3.8 9.3): the association a C-MOVE opens to its destination.

Only what C-MOVE's sub-operations need: connect, send an A-ASSOCIATE-RQ
proposing the presentation contexts given (this archive as SCU, default
roles), read the A-ASSOCIATE-AC (or -RJ), then release with
A-RELEASE-RQ / -RP or abort. Pure encoders and decoders
(:func:`encode_associate_rq`, :func:`parse_associate_ac`) sit beside the
:class:`Outgoing` association so each can be tested alone.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomflow.dicom.part10 import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION
from dicomflow.errors import ReceiverError
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.tcp import set_nodelay

_HEADER = struct.Struct(">BxI")
_ITEM = struct.Struct(">BxH")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
#: Largest PDU we announce to a destination (it only sends us C-STORE-RSPs).
MAX_RECEIVE_PDU = 64 * 1024


class AssociationRefused(ReceiverError):
    """The destination could not be reached, rejected the association, or broke the protocol while associating."""


@dataclass(frozen=True)
class Proposal:
    """One presentation context to propose: an odd id, an abstract syntax, its transfer syntaxes."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class Acceptance:
    """What an A-ASSOCIATE-AC granted."""

    #: {context id: accepted transfer syntax} of the contexts accepted.
    accepted: dict[int, str] = field(default_factory=dict)
    #: Largest PDU the acceptor takes (0: no limit).
    max_pdu_length: int = 0


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM.pack(item_type, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def proposals(contexts: Sequence[tuple[str, Sequence[str]]]) -> list[Proposal]:
    """``(abstract syntax, transfer syntaxes)`` pairs numbered 1, 3, 5, ... (at most 128, PS3.8 9.3.2.2)."""
    return [Proposal(2 * i + 1, abstract, tuple(syntaxes)) for i, (abstract, syntaxes) in enumerate(contexts[:128])]


def encode_associate_rq(calling_ae: str, called_ae: str, contexts: Sequence[Proposal], *,
                        max_pdu_length: int = MAX_RECEIVE_PDU) -> bytes:
    """An A-ASSOCIATE-RQ PDU (protocol version 1, the DICOM application context)."""
    items = [_item(0x10, ul.APPLICATION_CONTEXT.encode("ascii"))]
    for cx in contexts:
        sub = _item(0x30, cx.abstract_syntax.encode("ascii"))
        sub += b"".join(_item(0x40, ts.encode("ascii")) for ts in cx.transfer_syntaxes)
        items.append(_item(0x20, bytes((cx.context_id, 0, 0, 0)) + sub))
    user = (_item(0x51, _U32.pack(max_pdu_length)) + _item(0x52, IMPLEMENTATION_CLASS_UID.encode("ascii"))
            + _item(0x55, IMPLEMENTATION_VERSION.encode("ascii")))
    items.append(_item(0x50, user))
    body = _U16.pack(1) + b"\x00\x00" + _ae(called_ae) + _ae(calling_ae) + b"\x00" * 32 + b"".join(items)
    return _HEADER.pack(ul.A_ASSOCIATE_RQ, len(body)) + body


def _walk(body: bytes, start: int, end: int) -> list[tuple[int, bytes]]:
    out = []
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ul.ProtocolError("truncated item header in A-ASSOCIATE-AC")
        item_type, length = _ITEM.unpack_from(body, pos)
        if pos + 4 + length > end:
            raise ul.ProtocolError(f"item 0x{item_type:02X} of {length} bytes runs past its container")
        out.append((item_type, body[pos + 4:pos + 4 + length]))
        pos += 4 + length
    return out


def parse_associate_ac(body: bytes) -> Acceptance:
    """The contexts accepted (result 0) and the max PDU length of an A-ASSOCIATE-AC body.

    Raises:
        ProtocolError: the fixed part is short or an item is malformed.
    """
    if len(body) < 68:
        raise ul.ProtocolError(f"A-ASSOCIATE-AC of {len(body)} bytes is shorter than its fixed part (68)")
    out = Acceptance()
    for item_type, value in _walk(body, 68, len(body)):
        if item_type == 0x21 and len(value) >= 4:
            syntaxes = [sub for sub_type, sub in _walk(value, 4, len(value)) if sub_type == 0x40]
            if value[2] == ul.ACCEPTANCE and syntaxes:
                out.accepted[value[0]] = syntaxes[0].decode("ascii", "replace").rstrip("\x00 ")
        elif item_type == 0x50:
            for sub_type, sub in _walk(value, 0, len(value)):
                if sub_type == 0x51 and len(sub) == 4:
                    (out.max_pdu_length,) = _U32.unpack(sub)
    return out


class Outgoing:
    """An established association to a C-MOVE destination (this archive the requestor)."""

    def __init__(self, sock: socket.socket, contexts: Sequence[Proposal], acceptance: Acceptance,
                 wait_s: float) -> None:
        self.sock = sock
        self.max_send_pdu = acceptance.max_pdu_length
        self.wait_s = wait_s
        by_id = {cx.context_id: cx for cx in contexts}
        #: {context id: (abstract syntax, transfer syntax)} accepted.
        self.accepted = {cid: (by_id[cid].abstract_syntax, ts) for cid, ts in acceptance.accepted.items()
                         if cid in by_id}

    @classmethod
    def open(cls, address: tuple[str, int], *, calling_ae: str, called_ae: str,
             contexts: Sequence[tuple[str, Sequence[str]]], timeout_s: float, wait_s: float) -> Outgoing:
        """Connect and associate.

        Raises:
            AssociationRefused: no connection within ``timeout_s``, an A-ASSOCIATE-RJ or -ABORT, a broken answer.
        """
        proposed = proposals(contexts)
        try:
            sock = socket.create_connection(address, timeout=timeout_s)
        except OSError as exc:
            raise AssociationRefused(f"cannot connect to {address[0]}:{address[1]}: {exc}") from exc
        try:
            set_nodelay(sock)
            sock.sendall(encode_associate_rq(calling_ae, called_ae, proposed))
            pdu_type, body = ul.read_pdu(sock, 1 << 20, deadline=time.monotonic() + timeout_s)
            if pdu_type == ul.A_ASSOCIATE_RJ:
                raise AssociationRefused(f"{called_ae} rejected the association ({body[1:4].hex()})")
            if pdu_type != ul.A_ASSOCIATE_AC:
                raise AssociationRefused(f"{called_ae} answered the A-ASSOCIATE-RQ with PDU type 0x{pdu_type:02X}")
            outgoing = cls(sock, proposed, parse_associate_ac(body), wait_s)
            sock.settimeout(wait_s)  # each write of the sub-operations may wait as long as a read
            return outgoing
        except (OSError, ul.ProtocolError, ul.PeerClosed) as exc:
            sock.close()
            raise AssociationRefused(f"associating with {called_ae}: {exc}") from exc
        except AssociationRefused:
            sock.close()
            raise

    def release(self) -> None:
        """A-RELEASE-RQ, wait (bounded) for the A-RELEASE-RP, close; never raises."""
        try:
            self.sock.sendall(_HEADER.pack(ul.A_RELEASE_RQ, 4) + b"\x00" * 4)
            deadline = time.monotonic() + min(self.wait_s, 10.0)
            while ul.read_pdu(self.sock, 1 << 20, deadline=deadline)[0] != ul.A_RELEASE_RP:
                pass
        except (OSError, ul.ProtocolError, ul.PeerClosed):
            pass
        finally:
            self.sock.close()

    def abort(self) -> None:
        """A-ABORT (best effort) and close."""
        try:
            self.sock.sendall(ul.encode_abort(0, 0))
        except OSError:
            pass
        self.sock.close()


__all__ = ["MAX_RECEIVE_PDU", "Acceptance", "AssociationRefused", "Outgoing", "Proposal", "encode_associate_rq",
           "parse_associate_ac", "proposals"]
