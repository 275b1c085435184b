"""C-FIND on the pynetdicom engine: its ``evt.EVT_C_FIND`` handler over :class:`~dicomflow.qr.service.FindService`.

The same service as the native engine (:mod:`~dicomflow.receiver.find`), the
same tenant rule (the calling AE title in ``ingest.ae_tenants``, else the
default tenant). pynetdicom watches for C-CANCEL itself (``event.is_cancelled``).
One difference: pynetdicom does not end a C-FIND on a warning status (it
sends its own Success after it), so the ``[qr] max_results`` limit is
answered here with 0xA700 (Out of Resources, a final status) instead of the
native engine's 0xB001, with the same Error Comment.

pynetdicom's DUL thread sends before it reads: while its outgoing queue holds a
response it never reads the socket, so a C-CANCEL waits behind every match the
handler has already queued (all of them, when the handler is faster than the
wire). The handler therefore paces itself: once ``_QUEUED_HIGH`` responses
wait, it lets the queue drain, which gives the DUL its turn to read a cancel
and bounds the memory a large result holds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event

from dicomflow.ingest.tenant import TenantResolver
from dicomflow.ingest.transfer_log import Peer
from dicomflow.qr import exceptions as st
from dicomflow.qr.model import FIND_SOP_CLASSES
from dicomflow.qr.results import IDENTIFIER_SYNTAXES
from dicomflow.qr.service import FindRequest, FindService

_QUEUED_HIGH = 32
_DRAIN_POLL_S = 0.001


def _let_the_dul_read(event: Event) -> None:
    """Wait while ``_QUEUED_HIGH`` or more PDUs are queued for sending, until the queue is empty (see above)."""
    outgoing = event.assoc.dul.to_provider_queue
    if outgoing.qsize() < _QUEUED_HIGH:
        return
    while outgoing.qsize() and event.assoc.is_established:
        time.sleep(_DRAIN_POLL_S)


def handle_find(event: Event, finder: FindService, tenants: TenantResolver, peer_of: Any) -> Iterator[tuple[Any, Any]]:
    """Yield (status, identifier) for pynetdicom: each match, then the final status (with its Error Comment)."""
    peer: Peer = peer_of(event)
    context = event.context
    primitive = cast(C_FIND, event.request)
    raw = primitive.Identifier.getvalue() if primitive.Identifier is not None else b""
    request = FindRequest(
        sop_class_uid=str(context.abstract_syntax), identifier=raw,
        transfer_syntax=str(context.transfer_syntax), tenant=tenants.resolve(None, peer.calling_ae),
        calling_ae=peer.calling_ae, calling_address=peer.calling_address, user=peer.user,
    )
    for response in finder.find(request, lambda: bool(event.is_cancelled)):
        if response.identifier is not None:
            _let_the_dul_read(event)
            yield response.status, response.identifier.dataset()
            continue
        status = Dataset()
        status.Status = st.OUT_OF_RESOURCES if response.status == st.RESPONSE_LIMIT else response.status
        if response.comment:
            status.ErrorComment = response.comment[:64]
        yield status, None


def find_handlers(ae: AE, finder: FindService, tenants: TenantResolver, peer_of: Any) -> list[Any]:
    """Add the FIND SOP classes to ``ae`` (uncompressed syntaxes) and return the handler to bind."""
    for sop_class in FIND_SOP_CLASSES:
        ae.add_supported_context(sop_class, sorted(IDENTIFIER_SYNTAXES))
    return [(evt.EVT_C_FIND, handle_find, [finder, tenants, peer_of])]


__all__ = ["find_handlers", "handle_find"]
