"""What the pynetdicom engine adds to serve C-MOVE and C-GET: contexts and handlers (kept apart from C-FIND's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynetdicom import AE, _config, evt

from dicomflow.qr.contexts import retrieve_contexts, with_roles
from dicomflow.qr.get import handle_get
from dicomflow.qr.move import handle_move
from dicomflow.qr.retrieve import Retriever


def offer_retrieve(ae: AE, servers: Sequence[Any], retriever: Retriever) -> None:
    """Add the MOVE / GET contexts (storage contexts with roles, for C-GET) and bind the handlers.

    ``servers`` were made by ``ae.make_server`` (which copied the AE's contexts): they get the new
    contexts too. The AE is also the SCU of C-MOVE's sub-operations: its connection timeout is
    ``qr.move_connect_timeout_s``.
    """
    # pynetdicom's process-wide switch (like STORE_RECV_CHUNKED_DATASET): a C-STORE sent from a file path
    # streams the file's data set in chunks, as stored (qr/suboperations.py sends stored instances so).
    _config.STORE_SEND_CHUNKED_DATASET = True
    storage = with_roles(ae.supported_contexts)
    ae.supported_contexts = []  # the setter drops roles: add them one by one
    for cx in [*storage, *retrieve_contexts()]:
        ae.add_supported_context(str(cx.abstract_syntax), cx.transfer_syntax, scu_role=cx.scu_role,
                                 scp_role=cx.scp_role)
    ae.connection_timeout = retriever.settings.qr.move_connect_timeout_s
    for server in servers:
        server.contexts = ae.supported_contexts
        server.bind(evt.EVT_C_MOVE, handle_move, [retriever])
        server.bind(evt.EVT_C_GET, handle_get, [retriever])


__all__ = ["offer_retrieve"]
