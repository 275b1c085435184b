"""The acceptor's side of association negotiation (PS3.8 Upper Layer, PS3.7 Annex D): pure, no I/O.

Which requests are refused (protocol version, application context, calling
AE title not allowed; a user identity that fails is decided by
:mod:`~dicomflow.receiver.identity`), and which presentation contexts are
accepted: a storage SOP class or Verification, with the first transfer
syntax *the sender* proposed that we know, so instances are kept as sent; a
Query/Retrieve FIND SOP class (:mod:`dicomflow.qr`), and with ``[qr] enabled``
a GET or MOVE one, with the first uncompressed one (an identifier is a
handful of elements).

C-GET sends its C-STORE sub-operations on the requestor's own association,
the requestor in the SCP role: it proposes that in SCP/SCU Role Selection
items (PS3.7 D.3.3.4). With retrieve on, a proposed role for a storage SOP
class we accepted is granted as proposed (the reply echoes it), and the
contexts of those classes are the ones a C-GET may send on
(:meth:`Negotiation.roles`).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import AllTransferSyntaxes

from dicomflow.qr.model import FIND_SOP_CLASSES
from dicomflow.qr.results import IDENTIFIER_SYNTAXES
from dicomflow.qr.retrieve_keys import MODEL_OF
from dicomflow.receiver import upperlayer as ul
from dicomflow.receiver.identity import UserIdentity, parse_user_identity
from dicomflow.settings import ReceiverSettings

VERIFICATION = "1.2.840.10008.1.1"
#: Every composite storage SOP class lives under this root (PS3.4 Annex B.5).
STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."

def storage_sop_classes() -> frozenset[str]:
    """The storage SOP classes pynetdicom knows (it tracks the standard), plus Verification."""
    from pynetdicom import AllStoragePresentationContexts

    known = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts if cx.abstract_syntax}
    return frozenset(known | {VERIFICATION})


class Negotiation:
    """The acceptor's side of association negotiation (pure: no I/O)."""

    def __init__(self, receiver: ReceiverSettings, supported_transfer_syntaxes: Iterable[str], *,
                 retrieve: bool = False) -> None:
        """``supported_transfer_syntaxes`` (``ingest.supported_transfer_syntaxes``) are accepted besides pydicom's;
        ``retrieve``: the GET / MOVE contexts and role selection are answered (``[qr] enabled``)."""
        self.receiver = receiver
        self.retrieve = retrieve
        self.query_classes = frozenset(FIND_SOP_CLASSES) | (frozenset(MODEL_OF) if retrieve else frozenset())
        self.allowed = frozenset(a.strip() for a in receiver.allowed_calling_aes)
        self.abstract_syntaxes = storage_sop_classes()
        self.transfer_syntaxes = frozenset([*map(str, AllTransferSyntaxes), *supported_transfer_syntaxes])

    def refusal(self, request: ul.AssociateRequest) -> tuple[tuple[int, int, int], str] | None:
        """Why the association must be rejected, as (result, source, reason) and a sentence; None to accept."""
        if not request.protocol_version & 1:
            return ul.REJECT_PROTOCOL_VERSION, f"protocol version {request.protocol_version} not supported"
        if request.application_context != ul.APPLICATION_CONTEXT:
            return ul.REJECT_APPLICATION_CONTEXT, f"application context {request.application_context!r} not supported"
        if self.allowed and request.calling_ae not in self.allowed:
            return ul.REJECT_CALLING_AE, (
                f"calling AE title {request.calling_ae!r} is not in receiver.allowed_calling_aes")
        return None

    def contexts(self, request: ul.AssociateRequest) -> tuple[list[ul.ContextResult], dict[int, tuple[str, str]]]:
        """Answer every proposed context; return the answers and {context id: (abstract, transfer syntax)} accepted."""
        results: list[ul.ContextResult] = []
        accepted: dict[int, tuple[str, str]] = {}
        for proposed in request.contexts:
            abstract = proposed.abstract_syntax
            if abstract in self.query_classes:
                results.append(_query_context(proposed, accepted))
                continue
            if abstract not in self.abstract_syntaxes and not abstract.startswith(STORAGE_ROOT):
                results.append(ul.ContextResult(proposed.context_id, ul.ABSTRACT_SYNTAX_NOT_SUPPORTED,
                                                proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""))
                continue
            chosen = next((ts for ts in proposed.transfer_syntaxes if ts in self.transfer_syntaxes), None)
            if chosen is None:
                results.append(ul.ContextResult(proposed.context_id, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                                                proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else ""))
                continue
            results.append(ul.ContextResult(proposed.context_id, ul.ACCEPTANCE, chosen))
            accepted[proposed.context_id] = (abstract, chosen)
        return results, accepted

    def roles(self, request: ul.AssociateRequest,
              accepted: dict[int, tuple[str, str]]) -> tuple[bytes, dict[str, list[tuple[int, str]]]]:
        """The Role Selection reply items, and {SOP class: [(context id, syntax)]} a C-GET may send C-STOREs on.

        Only with retrieve on, and only for storage SOP classes accepted: the
        proposed roles are granted as they are (see the module doc).
        """
        if not self.retrieve or not request.roles:
            return b"", {}
        classes = {abstract for abstract, _syntax in accepted.values() if abstract not in self.query_classes}
        items = b"".join(ul.encode_role_selection(uid, scu, scp) for uid, (scu, scp) in request.roles.items()
                         if uid in classes)
        sending: dict[str, list[tuple[int, str]]] = {}
        for context_id, (abstract, syntax) in sorted(accepted.items()):
            if abstract in classes and request.roles.get(abstract, (1, 0))[1]:
                sending.setdefault(abstract, []).append((context_id, syntax))
        return items, sending


def _query_context(proposed: ul.ProposedContext, accepted: dict[int, tuple[str, str]]) -> ul.ContextResult:
    """A C-FIND context: accepted with the first uncompressed transfer syntax proposed (recorded in ``accepted``)."""
    chosen = next((ts for ts in proposed.transfer_syntaxes if ts in IDENTIFIER_SYNTAXES), None)
    if chosen is None:
        return ul.ContextResult(proposed.context_id, ul.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                                proposed.transfer_syntaxes[0] if proposed.transfer_syntaxes else "")
    accepted[proposed.context_id] = (proposed.abstract_syntax, chosen)
    return ul.ContextResult(proposed.context_id, ul.ACCEPTANCE, chosen)


#: An identity that fails (PS3.7 D.3.3.7.3): rejected-permanent, ACSE-related, no reason given.
REJECT_USER_IDENTITY = (1, 2, 1)


def user_identity(request: ul.AssociateRequest) -> UserIdentity | None:
    """The request's User Identity sub-item, decoded.

    Raises:
        ProtocolError: the sub-item is malformed (answered with A-ABORT like any malformed PDU).
    """
    if request.user_identity is None:
        return None
    try:
        return parse_user_identity(request.user_identity)
    except ValueError as exc:
        raise ul.ProtocolError(f"malformed user identity sub-item: {exc}") from exc


#: Metric label of each A-ASSOCIATE-RJ reason the negotiation gives.
REFUSAL_KINDS = {
    ul.REJECT_PROTOCOL_VERSION: "protocol-version",
    ul.REJECT_APPLICATION_CONTEXT: "application-context",
    ul.REJECT_CALLING_AE: "calling-ae",
    ul.REJECT_CALLED_AE: "called-ae",
}


__all__ = [
    "REFUSAL_KINDS", "REJECT_USER_IDENTITY", "STORAGE_ROOT", "VERIFICATION", "Negotiation", "storage_sop_classes",
    "user_identity",
]
