"""Presentation contexts of query/retrieve: what the acceptor offers, what a move destination is proposed.

C-GET sends its C-STORE sub-operations on the requestor's own association,
with the requestor in the SCP role for the storage SOP classes: it proposes
that in SCP/SCU Role Selection items (PS3.7 D.3.3.4). pynetdicom accepts a
proposed role only when the acceptor's context has both roles set, so the
storage contexts are offered with ``scu_role`` and ``scp_role`` True: the
reply then grants what the requestor proposed, and a plain C-STORE sender
(which proposes no roles) is unaffected.
"""

from __future__ import annotations

from collections.abc import Iterable

from pynetdicom.presentation import PresentationContext, build_context

from dicomflow.dicom.constants import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from dicomflow.qr.proposal import MAX_CONTEXTS, destination_syntaxes
from dicomflow.qr.retrieve_keys import PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE

#: The retrieve SOP classes answered (PS3.4 C.6.1.1.3/4, C.6.2.1.3/4).
RETRIEVE_SOP_CLASSES = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE, PATIENT_ROOT_GET, STUDY_ROOT_GET)


def retrieve_contexts() -> list[PresentationContext]:
    """The MOVE and GET contexts the acceptor supports (identifiers in Explicit or Implicit VR Little Endian)."""
    return [build_context(uid, [EXPLICIT_VR_LE, IMPLICIT_VR_LE]) for uid in RETRIEVE_SOP_CLASSES]


def with_roles(contexts: Iterable[PresentationContext]) -> list[PresentationContext]:
    """``contexts`` with both roles allowed, so a C-GET requestor may take the SCP role (see the module doc)."""
    out = []
    for cx in contexts:
        copy = build_context(str(cx.abstract_syntax), list(cx.transfer_syntax))
        copy.scu_role = True
        copy.scp_role = True
        out.append(copy)
    return out


def destination_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """Contexts to propose to a move destination (:func:`~dicomflow.qr.proposal.destination_syntaxes`)."""
    return [build_context(abstract, syntaxes) for abstract, syntaxes in destination_syntaxes(pairs)]


__all__ = ["MAX_CONTEXTS", "RETRIEVE_SOP_CLASSES", "destination_contexts", "retrieve_contexts", "with_roles"]
