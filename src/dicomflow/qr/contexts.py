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
from dicomflow.qr.retrieve_keys import PATIENT_ROOT_GET, PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE

#: The retrieve SOP classes answered (PS3.4 C.6.1.1.3/4, C.6.2.1.3/4).
RETRIEVE_SOP_CLASSES = (PATIENT_ROOT_MOVE, STUDY_ROOT_MOVE, PATIENT_ROOT_GET, STUDY_ROOT_GET)
#: pynetdicom's (and the standard's) limit on proposed presentation contexts.
MAX_CONTEXTS = 128


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
    """Contexts to propose to a move destination for instances of these (SOP class, stored syntax) pairs.

    Per SOP class: one context per stored syntax, alone (so the destination
    accepts it or refuses it, rather than choosing another), and one with the
    uncompressed syntaxes, which every instance can be transcoded to.
    At most :data:`MAX_CONTEXTS`; past that, SOP classes keep only their
    uncompressed context (what does not fit fails its sub-operation).
    """
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    contexts = [build_context(c, [EXPLICIT_VR_LE, IMPLICIT_VR_LE]) for c in list(by_class)[:MAX_CONTEXTS]]
    for sop_class, syntaxes in by_class.items():
        for syntax in syntaxes:
            if len(contexts) >= MAX_CONTEXTS:
                return contexts
            contexts.append(build_context(sop_class, [syntax]))
    return contexts


__all__ = ["MAX_CONTEXTS", "RETRIEVE_SOP_CLASSES", "destination_contexts", "retrieve_contexts", "with_roles"]
