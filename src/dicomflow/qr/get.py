"""C-GET SCP (Patient Root and Study Root GET) on the pynetdicom engine: sub-operations on the same association.

The requestor takes the SCP role for the storage SOP classes it proposed
with role selection (:mod:`.contexts`); each instance goes on an accepted
context where we are the SCU, in its stored syntax or one the requestor
accepted (transcoded). A handler never raises: every failure is a status.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.events import Event

from dicomflow.qr.parties import parties_of
from dicomflow.qr.retrieve import Retriever
from dicomflow.qr.retrieve_keys import MODEL_OF, UNABLE_TO_PROCESS, RetrieveRefused
from dicomflow.qr.suboperations import accepted_syntaxes, send_each, send_files_as_stored, status

log = logging.getLogger(__name__)


def handle_get(event: Event, retriever: Retriever) -> Iterator[Any]:
    """EVT_C_GET: yield the number of sub-operations, then (status, data set) pairs (pynetdicom's protocol)."""
    parties = parties_of(event, retriever.settings.worker_node_id)
    model = MODEL_OF[str(event.request.AffectedSOPClassUID)]
    try:
        identifier: Dataset = event.identifier
        transfer = retriever.start("C-GET", identifier, model, parties)
    except RetrieveRefused as refused:
        log.warning("C-GET from %s refused: %s", parties.requestor_ae, refused.reason)
        yield 1
        yield status(refused.status, refused.reason), None
        return
    except Exception as exc:  # noqa: BLE001 - an undecodable identifier is a status, never an exception
        log.warning("C-GET from %s: cannot read the identifier: %s", parties.requestor_ae, exc)
        yield 1
        yield status(UNABLE_TO_PROCESS, "cannot decode the identifier"), None
        return
    accepted = accepted_syntaxes(event.assoc.accepted_contexts, as_scu_only=True)
    yield len(transfer.items)
    if not transfer.items:
        return
    retriever.begin(transfer)
    event.assoc.bind(evt.EVT_DIMSE_RECV, transfer.on_store_response)
    undo = send_files_as_stored(event.assoc)
    try:
        yield from send_each(retriever, transfer, accepted, lambda: bool(event.is_cancelled))
    finally:
        undo()
        event.assoc.unbind(evt.EVT_DIMSE_RECV, transfer.on_store_response)
        retriever.finish(transfer)


__all__ = ["handle_get"]
