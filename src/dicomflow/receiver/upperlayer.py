"""The DICOM Upper Layer protocol (PS3.8 section 9): PDUs an acceptor reads and writes.

Only what a storage SCP needs, as plain functions over bytes so each can be
tested alone:

- read one PDU from a socket (:func:`read_pdu`);
- decode an A-ASSOCIATE-RQ (:func:`parse_associate_rq`), encode the
  A-ASSOCIATE-AC / -RJ answers, A-RELEASE-RP and A-ABORT;
- split a P-DATA-TF into its presentation data values (:func:`iter_pdvs`)
  and build P-DATA-TF PDUs (:func:`encode_pdata`).

Every length read from the wire is checked before it is used; a malformed
PDU raises :class:`ProtocolError`, and the acceptor answers it with an
A-ABORT.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from dicomflow.errors import ReceiverError

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

#: The only application context of DICOM (PS3.7 Annex A.2.1).
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# Presentation context results (PS3.8 9.3.3.2).
ACCEPTANCE = 0
USER_REJECTION = 1
ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
TRANSFER_SYNTAXES_NOT_SUPPORTED = 4

# A-ASSOCIATE-RJ (result, source, reason) triples (PS3.8 9.3.4).
REJECT_CALLING_AE = (1, 1, 3)  # permanent, service user, calling AE title not recognized
REJECT_CALLED_AE = (1, 1, 7)  # permanent, service user, called AE title not recognized
REJECT_NO_CONTEXT = (1, 1, 1)  # permanent, service user, no reason given
REJECT_APPLICATION_CONTEXT = (1, 1, 2)  # permanent, service user, application context not supported
REJECT_BUSY = (2, 3, 2)  # transient, service provider (presentation), local limit exceeded
REJECT_PROTOCOL_VERSION = (1, 2, 2)  # permanent, service provider (ACSE), protocol version not supported

#: Message control header bits of a PDV.
COMMAND = 0x01
LAST_FRAGMENT = 0x02

_PDU_HEADER = struct.Struct(">BxI")
_ITEM_HEADER = struct.Struct(">BxH")
_PDV_HEADER = struct.Struct(">IBB")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


class ProtocolError(ReceiverError):
    """The peer broke the Upper Layer protocol (bad PDU type, lengths, item layout)."""


class PeerClosed(ReceiverError):
    """The peer closed the connection (or it broke) between PDUs."""


# --------------------------------------------------------------------------- reading


def _recv_exactly(sock: socket.socket, size: int, *, pdu_started: bool, deadline: float | None = None) -> bytes:
    """Read ``size`` bytes; raise PeerClosed at a clean boundary, ProtocolError inside a PDU.

    With ``deadline`` (a :func:`time.monotonic` value) every byte must have
    arrived by then, however the peer spreads them: TimeoutError otherwise.
    """
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("deadline passed")
            sock.settimeout(left)
        try:
            chunk = sock.recv(min(remaining, 1 << 20))
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise PeerClosed(str(exc)) from exc
        if not chunk:
            if pdu_started or chunks:
                raise ProtocolError(f"connection closed inside a PDU ({size - remaining} of {size} bytes read)")
            raise PeerClosed("connection closed")
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def read_pdu(sock: socket.socket, max_length: int, *, deadline: float | None = None) -> tuple[int, bytes]:
    """Read one PDU: ``(type, body)``, all of it by ``deadline`` (a :func:`time.monotonic` value) if given.

    Raises:
        PeerClosed: the connection ended before a new PDU started.
        ProtocolError: the PDU type is unknown, it is longer than ``max_length``, or truncated.
        TimeoutError: the deadline (or, without one, the socket's timeout) passed.
    """
    header = _recv_exactly(sock, _PDU_HEADER.size, pdu_started=False, deadline=deadline)
    pdu_type, length = _PDU_HEADER.unpack(header)
    if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
        raise ProtocolError(f"unknown PDU type 0x{pdu_type:02X}")
    if length > max_length:
        raise ProtocolError(f"PDU type 0x{pdu_type:02X} of {length} bytes exceeds the {max_length}-byte limit")
    return pdu_type, _recv_exactly(sock, length, pdu_started=True, deadline=deadline) if length else b""


# --------------------------------------------------------------------------- A-ASSOCIATE-RQ


@dataclass(frozen=True)
class ProposedContext:
    """One presentation context of an A-ASSOCIATE-RQ."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass
class AssociateRequest:
    """The parts of an A-ASSOCIATE-RQ an acceptor decides on."""

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str = ""
    contexts: list[ProposedContext] = field(default_factory=list)
    #: Largest PDU the requestor accepts (0: no limit).
    max_pdu_length: int = 0
    implementation_class_uid: str = ""
    implementation_version: str = ""
    #: The User Identity sub-item's value (0x58, PS3.7 D.3.3.7), undecoded; None when absent.
    user_identity: bytes | None = None
    #: SCP/SCU Role Selection sub-items (0x54, PS3.7 D.3.3.4): {SOP class UID: (SCU role, SCP role)}.
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)


def _uid(raw: bytes) -> str:
    return raw.decode("ascii", "replace").rstrip("\x00 ")


def _items(body: bytes, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """``(item type, value)`` of the items between ``start`` and ``end``."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise ProtocolError("truncated item header")
        item_type, length = _ITEM_HEADER.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise ProtocolError(f"item 0x{item_type:02X} of {length} bytes runs past its container")
        yield item_type, body[pos:pos + length]
        pos += length


def parse_associate_rq(body: bytes) -> AssociateRequest:
    """Decode the body of an A-ASSOCIATE-RQ PDU.

    Raises:
        ProtocolError: the fixed part is short or an item is malformed.
    """
    if len(body) < 68:
        raise ProtocolError(f"A-ASSOCIATE-RQ of {len(body)} bytes is shorter than its fixed part (68)")
    (version,) = _U16.unpack_from(body, 0)
    request = AssociateRequest(
        protocol_version=version,
        called_ae=body[4:20].decode("ascii", "replace").strip(" \x00"),
        calling_ae=body[20:36].decode("ascii", "replace").strip(" \x00"),
    )
    for item_type, value in _items(body, 68, len(body)):
        if item_type == 0x10:
            request.application_context = _uid(value)
        elif item_type == 0x20:
            request.contexts.append(_proposed_context(value))
        elif item_type == 0x50:
            _user_information(value, request)
    return request


def _proposed_context(value: bytes) -> ProposedContext:
    if len(value) < 4:
        raise ProtocolError("presentation context item shorter than 4 bytes")
    abstract = ""
    syntaxes: list[str] = []
    for sub_type, sub in _items(value, 4, len(value)):
        if sub_type == 0x30:
            abstract = _uid(sub)
        elif sub_type == 0x40:
            syntaxes.append(_uid(sub))
    return ProposedContext(value[0], abstract, tuple(syntaxes))


def _user_information(value: bytes, request: AssociateRequest) -> None:
    for sub_type, sub in _items(value, 0, len(value)):
        if sub_type == 0x51 and len(sub) == 4:
            (request.max_pdu_length,) = _U32.unpack(sub)
        elif sub_type == 0x52:
            request.implementation_class_uid = _uid(sub)
        elif sub_type == 0x55:
            request.implementation_version = sub.decode("ascii", "replace").strip(" \x00")
        elif sub_type == 0x58:
            request.user_identity = bytes(sub)  # decided by receiver.identity
        elif sub_type == 0x54:
            request.roles.update([_role_selection(sub)])  # answered by receiver.negotiation (C-GET)
        # 0x53 asynchronous operations, 0x56/0x57 extended negotiation: not answered,
        # which means the defaults (synchronous operations, no extended negotiation), as PS3.7 Annex D allows.


def _role_selection(sub: bytes) -> tuple[str, tuple[int, int]]:
    """One SCP/SCU Role Selection sub-item: UID length, UID, SCU role, SCP role."""
    if len(sub) < 4:
        raise ProtocolError("role selection sub-item shorter than 4 bytes")
    (length,) = _U16.unpack_from(sub, 0)
    if len(sub) != length + 4:
        raise ProtocolError(f"role selection sub-item of {len(sub)} bytes for a UID of {length}")
    return _uid(sub[2:2 + length]), (sub[2 + length], sub[3 + length])


def encode_role_selection(sop_class_uid: str, scu_role: int, scp_role: int) -> bytes:
    """The SCP/SCU Role Selection sub-item answering (or proposing) the roles of ``sop_class_uid``."""
    uid = _ascii(sop_class_uid)
    return _item(0x54, _U16.pack(len(uid)) + uid + bytes((scu_role, scp_role)))


# --------------------------------------------------------------------------- answers


def _item(item_type: int, value: bytes) -> bytes:
    return _ITEM_HEADER.pack(item_type, len(value)) + value


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return _PDU_HEADER.pack(pdu_type, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def _ascii(text: str) -> bytes:
    """A UID (or any text) from the peer as ASCII, whatever it held: decoding it replaced bad bytes with
    U+FFFD, which ``encode("ascii")`` refuses (it used to raise while answering a mutated request)."""
    return text.encode("ascii", "replace")


@dataclass(frozen=True)
class ContextResult:
    """The answer to one proposed presentation context."""

    context_id: int
    result: int
    #: The accepted transfer syntax (any syntax when the context is rejected).
    transfer_syntax: str


def encode_associate_ac(
    request: AssociateRequest,
    results: list[ContextResult],
    *,
    max_pdu_length: int,
    implementation_class_uid: str,
    implementation_version: str,
    extra_user_items: bytes = b"",
    role_items: bytes = b"",
) -> bytes:
    """An A-ASSOCIATE-AC echoing the request's AE titles, with one item per proposed context.

    ``role_items`` (SCP/SCU Role Selection) go before the implementation version, as PS3.7 D.3.3 orders
    the sub-items; ``extra_user_items`` (the user identity response) after it.
    """
    items = [_item(0x10, APPLICATION_CONTEXT.encode("ascii"))]
    for r in results:
        sub = _item(0x40, _ascii(r.transfer_syntax)[:64])
        items.append(_item(0x21, bytes((r.context_id, 0, r.result, 0)) + sub))
    user = (
        _item(0x51, _U32.pack(max_pdu_length))
        + _item(0x52, _ascii(implementation_class_uid))
        + role_items
        + _item(0x55, _ascii(implementation_version)[:16])
        + extra_user_items
    )
    items.append(_item(0x50, user))
    fixed = _U16.pack(1) + b"\x00\x00" + _ae(request.called_ae) + _ae(request.calling_ae) + b"\x00" * 32
    return _pdu(A_ASSOCIATE_AC, fixed + b"".join(items))


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    return _pdu(A_ASSOCIATE_RJ, bytes((0, result, source, reason)))


def encode_release_rp() -> bytes:
    return _pdu(A_RELEASE_RP, b"\x00" * 4)


def encode_abort(source: int = 2, reason: int = 0) -> bytes:
    """A-ABORT; source 2 = service provider, reason 0 = not specified, 2 = unexpected PDU."""
    return _pdu(A_ABORT, bytes((0, 0, source, reason)))


# --------------------------------------------------------------------------- P-DATA-TF


def iter_pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """``(presentation context id, message control header, fragment)`` of each PDV item.

    Raises:
        ProtocolError: a PDV item is truncated or too short to hold its header.
    """
    view = memoryview(body)
    pos, end = 0, len(body)
    while pos < end:
        if pos + 6 > end:
            raise ProtocolError("truncated PDV item header")
        length, context_id, control = _PDV_HEADER.unpack_from(body, pos)
        if length < 2 or pos + 4 + length > end:
            raise ProtocolError(f"PDV item of length {length} does not fit its P-DATA-TF")
        yield context_id, control, view[pos + 6:pos + 4 + length]
        pos += 4 + length


def encode_pdata(context_id: int, control: int, data: bytes, max_pdu_length: int) -> list[bytes]:
    """P-DATA-TF PDUs carrying ``data`` as one message part (command or data set).

    Fragments so no PDU exceeds ``max_pdu_length`` (0 = no limit); the last
    fragment carries the last-fragment bit.
    """
    room = len(data) if max_pdu_length <= 0 else max(1, max_pdu_length - 6)
    pdus = []
    pos = 0
    while True:
        fragment = data[pos:pos + room]
        pos += len(fragment)
        last = pos >= len(data)
        header = _PDV_HEADER.pack(len(fragment) + 2, context_id, control | (LAST_FRAGMENT if last else 0))
        pdus.append(_pdu(P_DATA_TF, header + fragment))
        if last:
            return pdus


__all__ = [
    "APPLICATION_CONTEXT",
    "AssociateRequest",
    "ContextResult",
    "PeerClosed",
    "ProposedContext",
    "ProtocolError",
    "encode_abort",
    "encode_associate_ac",
    "encode_associate_rj",
    "encode_pdata",
    "encode_release_rp",
    "encode_role_selection",
    "iter_pdvs",
    "parse_associate_rq",
    "read_pdu",
]
