"""C-MOVE SCP (Patient Root and Study Root MOVE) on the pynetdicom engine: sub-operations over a new association.

The Move Destination is looked up in ``[qr.destinations]`` (an unknown one
answers 0xA801, as does one that refuses the association). The new
association proposes, per SOP class to send, the stored syntaxes alone and
the uncompressed ones (:func:`~dicomflow.qr.contexts.destination_contexts`);
each instance then goes in its stored syntax when the destination accepted
it, else transcoded to an uncompressed one. pynetdicom (this AE, as the SCU)
opens and releases that association; the handler captures it when it is
established to learn what was accepted, and records each C-STORE response.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from dicomflow.qr.contexts import destination_contexts
from dicomflow.qr.parties import parties_of
from dicomflow.qr.retrieve import Retriever, Transfer
from dicomflow.qr.retrieve_keys import MODEL_OF, UNABLE_TO_PROCESS, RetrieveRefused
from dicomflow.qr.suboperations import accepted_syntaxes, send_each, send_files_as_stored, status

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


class _Captured:
    """The sub-operations' association, once pynetdicom established it."""

    def __init__(self) -> None:
        self.assoc: Association | None = None

    def established(self, event: Event) -> None:
        self.assoc = event.assoc
        no_delay(event.assoc)


class _HeldCheckpoint(threading.Event):
    """pynetdicom's reactor checkpoint, kept clear (the reactor paused) while the sub-operations are sent.

    pynetdicom's association thread runs a reactor that takes any message
    off the DIMSE queue while it is not paused; ``send_c_store`` from
    another thread (this handler's: the C-MOVE association's) pauses it by
    clearing the checkpoint and polling a flag the reactor sets *before* it
    blocks, and sets it again after each response. A C-STORE-RSP that
    arrives inside that window (quickly, with TCP_NODELAY) is taken by the
    reactor as an "unexpected" message and the send times out. Held, the
    checkpoint ignores those ``set`` calls: the reactor stays blocked from
    the first sub-operation to the last, and is released before pynetdicom
    releases the association.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held = True

    def set(self) -> None:
        if not self.held:
            super().set()

    def release_hold(self) -> None:
        self.held = False
        super().set()


def hold_reactor(assoc: Association) -> _HeldCheckpoint:
    """Pause ``assoc``'s reactor until :meth:`_HeldCheckpoint.release_hold` (see :class:`_HeldCheckpoint`)."""
    held = _HeldCheckpoint()
    assoc._reactor_checkpoint = held
    deadline = time.monotonic() + 1.0
    time.sleep(0.005)  # past an iteration that was already through the old checkpoint
    while not assoc._is_paused and time.monotonic() < deadline:
        time.sleep(0.0005)
    return held


def no_delay(assoc: Association) -> None:
    """TCP_NODELAY on the sub-operations' socket: without it each C-STORE waits ~40 ms (Nagle + delayed ACK)."""
    sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:  # an observer: the transfer goes on, only slower
            log.debug("cannot set TCP_NODELAY on the move association: %s", exc)


def _lookup(event: Event, retriever: Retriever, destination: str) -> Transfer | Dataset:
    """The transfer, or the failure status to answer."""
    host, port = retriever.destination(destination) or ("", 0)
    parties = parties_of(event, retriever.settings.worker_node_id, destination, f"{host}:{port}")
    model = MODEL_OF[str(event.request.AffectedSOPClassUID)]
    try:
        identifier: Dataset = event.identifier
        return retriever.start("C-MOVE", identifier, model, parties)
    except RetrieveRefused as refused:
        log.warning("C-MOVE from %s refused: %s", parties.requestor_ae, refused.reason)
        return status(refused.status, refused.reason)
    except Exception as exc:  # noqa: BLE001 - an undecodable identifier is a status, never an exception
        log.warning("C-MOVE from %s: cannot read the identifier: %s", parties.requestor_ae, exc)
        return status(UNABLE_TO_PROCESS, "cannot decode the identifier")


def handle_move(event: Event, retriever: Retriever) -> Iterator[Any]:
    """EVT_C_MOVE: yield the destination, the number of sub-operations, then (status, data set) pairs."""
    destination = str(event.move_destination or "").strip()
    address = retriever.destination(destination)
    if address is None:
        log.warning("C-MOVE from %s: Move Destination %r is not in [qr.destinations]",
                    (event.assoc.requestor.ae_title or "").strip(), destination)
        yield None, None  # pynetdicom answers 0xA801 (Move Destination unknown)
        return
    found = _lookup(event, retriever, destination)
    if isinstance(found, Dataset):
        yield (*address, {"contexts": [build_context(VERIFICATION)]})  # pynetdicom answers after associating
        yield 1
        yield found, None
        return
    captured = _Captured()
    contexts = destination_contexts((i.sop_class_uid, i.transfer_syntax_uid) for i in found.items)
    yield (*address, {"contexts": contexts, "evt_handlers": [
        (evt.EVT_ESTABLISHED, captured.established), (evt.EVT_DIMSE_RECV, found.on_store_response)]})
    yield len(found.items)
    if not found.items:
        return
    try:
        if captured.assoc is None:  # pynetdicom answered 0xA801 and stopped; nothing was sent
            return
        retriever.begin(found)
        accepted = accepted_syntaxes(captured.assoc.accepted_contexts, as_scu_only=False)
        send_files_as_stored(captured.assoc)  # the association ends with this retrieve: no undo needed
        held = hold_reactor(captured.assoc)
        try:
            yield from send_each(retriever, found, accepted, lambda: bool(event.is_cancelled))
        finally:
            held.release_hold()
    finally:
        retriever.finish(found)


__all__ = ["handle_move"]
