"""The C-STORE sub-operations of a C-GET or C-MOVE on the native engine: prepared ahead, sent whole, answered.

A :class:`Link` is where the sub-operations go: the requestor's own
association (C-GET) or the one opened to the Move Destination (C-MOVE).
:func:`run` sends the transfer's instances over it one at a time, as the
protocol wants without an asynchronous operations window, but keeps the
peer's work and ours apart in time as little as it can: after the C-STORE
of instance *i* is on the wire, instance *i+1* is prepared (read through the
storage layer, or transcoded, and framed into P-DATA-TF PDUs behind its
C-STORE-RQ) while the peer stores *i*; only then does it wait for *i*'s
C-STORE-RSP. An instance goes out in one write: the command PDU and the data
PDUs laid out in one preallocated buffer, the data read into it in place
(``os.preadv`` straight into each PDU's fragment), never copied through
Python objects. An instance past :data:`PRELOAD_LIMIT` is streamed instead,
a few PDUs at a time, so memory holds at most two instances of ordinary
size per retrieve, never a study.

Pending responses are optional (PS3.4 C.4.2.3, C.4.3.3): one after the first
sub-operation, then at most one each :data:`PENDING_INTERVAL_S`, not one per
instance.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dicomflow.dicom.part10 import read_file_meta
from dicomflow.errors import ReceiverError
from dicomflow.qr.retrieve import InstanceUnavailable, LocalCopy, Retriever, Transfer
from dicomflow.receiver import dimse
from dicomflow.receiver import upperlayer as ul

log = logging.getLogger(__name__)

#: Instances up to this size are read whole before they are sent (two per retrieve at most); larger ones stream.
PRELOAD_LIMIT = 32 * 1024 * 1024
#: Data per PDU when the peer set no limit.
UNLIMITED_FRAGMENT = 1024 * 1024
#: Seconds between two pending responses (the first goes after the first sub-operation).
PENDING_INTERVAL_S = 0.1
#: Bytes of a stored file read to find where its data set starts (past the File Meta Information).
_HEAD = 16 * 1024
#: iovecs per preadv call (Linux's IOV_MAX is 1024).
_IOV_BATCH = 512
#: A PDU header (type, reserved, length) and a PDV header (length, context, control) before each fragment.
_PDU_OVERHEAD = 12
_HEADERS = struct.Struct(">BxIIBB")
_PDU_HEAD = struct.Struct(">BxI")
_PDV_HEAD = struct.Struct(">IBB")


class LinkBroken(ReceiverError):
    """The association carrying the sub-operations broke (a C-MOVE destination that went away)."""


@dataclass
class Link:
    """Where a retrieve's C-STOREs go: a socket, how to write on it, and what the peer accepted."""

    sock: socket.socket
    send: Callable[[bytes | bytearray | memoryview], None]
    max_send_pdu: int
    #: {SOP class: [(context id, transfer syntax)]} we may send C-STORE-RQs on.
    contexts: dict[str, list[tuple[int, str]]]
    wait_s: float
    #: The C-MOVE-RQ being served (its originator is named in each C-STORE-RQ), None for a C-GET.
    move_originator: tuple[str, int] | None = None
    #: Called with any command that is not the C-STORE-RSP awaited (C-GET: a C-CANCEL-RQ); it raises if unexpected.
    on_other: Callable[[dimse.Command], None] | None = None
    _next_id: int = 0
    _reader: dimse.CommandReader = field(default_factory=lambda: dimse.CommandReader("during the C-STORE sub-operations"))
    _commands: deque[dimse.Command] = field(default_factory=deque)
    #: The one buffer sub-operations are laid out in: the next is prepared only once the last was written.
    _buffer: bytearray = field(default_factory=bytearray)

    def buffer(self, size: int) -> bytearray:
        """The link's reused buffer, at least ``size`` bytes (grown when an instance needs more)."""
        if len(self._buffer) < size:
            self._buffer = bytearray(size)
        return self._buffer

    def message_id(self) -> int:
        self._next_id = self._next_id % 0xFFFF + 1
        return self._next_id

    def fragment(self) -> int:
        return self.max_send_pdu - 6 if self.max_send_pdu > _PDU_OVERHEAD else UNLIMITED_FRAGMENT

    def read_command(self) -> dimse.Command:
        """The next whole command set the peer sends.

        Raises:
            PeerClosed: the peer aborted or closed.
            ProtocolError: a data set, or a PDU other than P-DATA-TF.
            TimeoutError: nothing whole within ``wait_s``.
        """
        deadline = time.monotonic() + self.wait_s
        while not self._commands:
            self._commands.extend(self._reader.read(self.sock, 1 << 20, deadline))
        return self._commands.popleft()

    def await_store_rsp(self, message_id: int) -> int:
        """The status of our C-STORE-RQ ``message_id`` (other commands go to ``on_other``)."""
        while True:
            command = self.read_command()
            if command.command_field == dimse.C_STORE_RSP and command.message_id_responded_to == message_id:
                return 0xC000 if command.status is None else command.status
            if self.on_other is None:
                raise ul.ProtocolError(f"DIMSE command 0x{command.command_field:04X} while a C-STORE-RSP "
                                       f"to message {message_id} was awaited")
            self.on_other(command)


@dataclass
class Prepared:
    """One C-STORE sub-operation ready to go: its whole PDUs in ``buffer``, or a file to stream after it."""

    sop_uid: str
    message_id: int
    context_id: int
    buffer: bytes | bytearray | memoryview
    #: A large instance: (open file, data set offset, length) to stream after ``buffer`` (the command PDU).
    stream: tuple[int, int, int] | None = None
    cleanup: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Unavailable:
    """An instance that cannot be sent: its sub-operation fails with ``reason``."""

    sop_uid: str
    reason: str


def _frame(out: bytearray, pos: int, context_id: int, length: int, fragment: int, *,
           final: bool = True) -> list[memoryview]:
    """Write the PDU and PDV headers of ``length`` data bytes into ``out`` from ``pos``; the fragments' views.

    The last PDU carries the last-fragment bit when ``final`` (a streamed data set's last chunk).
    """
    view = memoryview(out)
    slots = []
    done = 0
    pack = _HEADERS.pack_into
    while True:
        size = min(fragment, length - done)
        done += size
        last = done >= length
        pack(out, pos, ul.P_DATA_TF, size + 6, size + 2, context_id, ul.LAST_FRAGMENT if last and final else 0)
        slots.append(view[pos + _PDU_OVERHEAD:pos + _PDU_OVERHEAD + size])
        pos += _PDU_OVERHEAD + size
        if last:
            return slots


def framed_size(length: int, fragment: int) -> int:
    """Bytes of ``length`` data bytes as P-DATA-TF PDUs of at most ``fragment`` data bytes each."""
    return length + _PDU_OVERHEAD * max(1, -(-length // fragment))


def _read_into(fd: int, slots: list[memoryview], offset: int) -> None:
    """Fill ``slots`` from ``fd`` at ``offset``.

    Raises:
        OSError: the file is shorter than the slots.
    """
    for start in range(0, len(slots), _IOV_BATCH):
        batch = slots[start:start + _IOV_BATCH]
        want = sum(len(s) for s in batch)
        got = os.preadv(fd, batch, offset)
        if got != want:
            raise OSError(f"short read: {got} of {want} bytes at offset {offset}")
        offset += want


def _layout(link: Link, command_set: bytes, context_id: int, length: int) -> tuple[memoryview, list[memoryview]]:
    """The C-STORE-RQ and ``length`` data bytes as PDUs in the link's buffer: the buffer and the data's slots.

    The command set and the first data fragment share the first P-DATA-TF (PS3.8 9.3.5: a PDU
    carries one or more PDVs), so the peer reads one PDU fewer per instance; a command that
    leaves no room under the peer's limit goes in a PDU of its own.
    """
    fragment = link.fragment()
    command_pdv = 6 + len(command_set)
    first = (link.max_send_pdu - command_pdv - 6) if link.max_send_pdu > _PDU_OVERHEAD else fragment
    if first < 1 or length < 1:  # no room beside the command: the command in its own PDU(s)
        command = b"".join(ul.encode_pdata(context_id, ul.COMMAND, command_set, link.max_send_pdu))
        total = len(command) + framed_size(length, fragment)
        buffer = link.buffer(total)
        buffer[:len(command)] = command
        return memoryview(buffer)[:total], _frame(buffer, len(command), context_id, length, fragment)
    first = min(first, length)
    rest = length - first
    total = 6 + command_pdv + 6 + first + (framed_size(rest, fragment) if rest else 0)
    buffer = link.buffer(total)
    _PDU_HEAD.pack_into(buffer, 0, ul.P_DATA_TF, command_pdv + 6 + first)
    _PDV_HEAD.pack_into(buffer, 6, len(command_set) + 2, context_id, ul.COMMAND | ul.LAST_FRAGMENT)
    buffer[12:12 + len(command_set)] = command_set
    pos = 6 + command_pdv
    _PDV_HEAD.pack_into(buffer, pos, first + 2, context_id, 0 if rest else ul.LAST_FRAGMENT)
    slots = [memoryview(buffer)[pos + 6:pos + 6 + first]]
    if rest:
        slots += _frame(buffer, pos + 6 + first, context_id, rest, fragment)
    return memoryview(buffer)[:total], slots


def prepare(retriever: Retriever, link: Link, transfer: Transfer, index: int) -> Prepared | Unavailable:
    """Read the transfer's instance ``index`` (or transcode it) and lay out its C-STORE-RQ and data PDUs.

    Never raises for one instance: what cannot be sent is :class:`Unavailable`.
    """
    item = transfer.items[index]
    offered = link.contexts.get(item.sop_class_uid, [])
    try:
        found = retriever.fetch(item, [ts for _cid, ts in offered])
    except InstanceUnavailable as exc:
        return Unavailable(item.sop_uid, exc.reason)
    syntax = item.transfer_syntax_uid if isinstance(found, LocalCopy) else found.transfer_syntax
    context_id = next(cid for cid, ts in offered if ts == syntax)
    message_id = link.message_id()
    ae, originator = link.move_originator or (None, None)
    command_set = dimse.c_store_rq(message_id, item.sop_class_uid, item.sop_uid, move_originator_ae=ae,
                                   move_originator_id=originator)
    if not isinstance(found, LocalCopy):
        try:
            _meta, start = read_file_meta(found.data, 132)
        except ValueError as exc:
            return Unavailable(item.sop_uid, f"the transcoded {item.file_path} is unreadable: {exc}")
        data = memoryview(found.data)[start:]
        buffer, slots = _layout(link, command_set, context_id, len(data))
        offset = 0
        for slot in slots:
            slot[:] = data[offset:offset + len(slot)]
            offset += len(slot)
        return Prepared(item.sop_uid, message_id, context_id, buffer)
    try:
        fd = os.open(found.local_path, os.O_RDONLY)
    except OSError as exc:
        found.cleanup()
        return Unavailable(item.sop_uid, f"cannot open {item.file_path}: {exc}")

    def cleanup() -> None:
        os.close(fd)
        found.cleanup()

    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, _HEAD, 0)
        if head[128:132] != b"DICM":
            raise ValueError("not a Part 10 file")
        _meta, start = read_file_meta(head, 132)
        length = size - start
        if length > PRELOAD_LIMIT:
            command = b"".join(ul.encode_pdata(context_id, ul.COMMAND, command_set, link.max_send_pdu))
            return Prepared(item.sop_uid, message_id, context_id, command, (fd, start, length), cleanup)
        laid, slots = _layout(link, command_set, context_id, length)
        _read_into(fd, slots, start)
    except (OSError, ValueError) as exc:
        cleanup()
        return Unavailable(item.sop_uid, f"cannot read {item.file_path}: {exc}")
    cleanup()
    return Prepared(item.sop_uid, message_id, context_id, laid)


def send(link: Link, prepared: Prepared) -> None:
    """Put one prepared sub-operation on the wire (a large one streamed, a few PDUs per write).

    Raises:
        OSError: the connection broke; or the file could not be read while streaming.
    """
    link.send(prepared.buffer)
    if prepared.stream is None:
        return
    fd, offset, length = prepared.stream
    fragment = link.fragment()
    chunk = 16 * fragment if fragment < UNLIMITED_FRAGMENT else fragment
    buffer = bytearray(framed_size(chunk, fragment))
    sent = 0
    while sent < length:
        size = min(chunk, length - sent)
        slots = _frame(buffer, 0, prepared.context_id, size, fragment, final=sent + size >= length)
        _read_into(fd, slots, offset + sent)
        link.send(memoryview(buffer)[:framed_size(size, fragment)])
        sent += size


@dataclass
class Progress:
    """Sends the pending responses of one retrieve, throttled (see the module doc)."""

    pending: Callable[[dimse.Counts], None]
    sent_first: bool = False
    last: float = 0.0

    def tick(self, transfer: Transfer, remaining: int) -> None:
        now = time.monotonic()
        if remaining and (not self.sent_first or now - self.last >= PENDING_INTERVAL_S):
            self.sent_first, self.last = True, now
            self.pending(counts(transfer, remaining))


def counts(transfer: Transfer, remaining: int | None) -> dimse.Counts:
    return dimse.Counts(completed=len(transfer.completed), failed=len(transfer.failed),
                        warning=len(transfer.warned), remaining=remaining)


def run(retriever: Retriever, transfer: Transfer, link: Link, progress: Progress,
        is_cancelled: Callable[[], bool]) -> None:
    """Send every instance of ``transfer`` over ``link``, recording each status in it; stop at a C-CANCEL.

    Raises:
        PeerClosed, ProtocolError, TimeoutError, OSError: the link (or, via ``is_cancelled``, the requestor) broke.
    """
    items = transfer.items
    upcoming: Prepared | Unavailable | None = prepare(retriever, link, transfer, 0) if items else None
    try:
        for index, item in enumerate(items):
            current, upcoming = upcoming, None
            assert current is not None
            if is_cancelled():
                transfer.cancelled = True
                if isinstance(current, Prepared):
                    current.cleanup()
                log.info("%s from %s cancelled after %d of %d sub-operation(s)", transfer.service,
                         transfer.parties.requestor_ae, index, len(items))
                return
            if isinstance(current, Prepared):
                try:
                    send(link, current)
                finally:
                    current.cleanup()
            if index + 1 < len(items):  # read the next one while the peer stores this one
                upcoming = prepare(retriever, link, transfer, index + 1)
            if isinstance(current, Prepared):
                transfer.result(item.sop_uid, link.await_store_rsp(current.message_id))
            else:
                log.warning("%s from %s: instance %s not sent: %s", transfer.service, transfer.parties.requestor_ae,
                            item.sop_uid, current.reason)
                transfer.result(item.sop_uid, None, current.reason)
            progress.tick(transfer, len(items) - index - 1)
    finally:
        if isinstance(upcoming, Prepared):
            upcoming.cleanup()


__all__ = ["PENDING_INTERVAL_S", "PRELOAD_LIMIT", "Link", "LinkBroken", "Prepared", "Progress", "Unavailable",
           "counts", "framed_size", "prepare", "run", "send"]
