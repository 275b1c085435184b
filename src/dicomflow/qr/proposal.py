"""What a C-MOVE proposes to its destination, per SOP class to send: pure, no I/O, no network engine.

Per SOP class: one context with the uncompressed syntaxes (every instance
can be transcoded to them), then one context per stored syntax, alone (so
the destination accepts it or refuses it, rather than choosing another).
At most :data:`MAX_CONTEXTS`; past that, SOP classes keep only their
uncompressed context (what does not fit fails its sub-operation).
"""

from __future__ import annotations

from collections.abc import Iterable

from dicomflow.dicom.constants import EXPLICIT_VR_LE, IMPLICIT_VR_LE

#: The standard's limit on proposed presentation contexts (PS3.8 9.3.2.2: odd ids 1-255).
MAX_CONTEXTS = 128


def destination_syntaxes(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """``(abstract syntax, transfer syntaxes)`` to propose for instances of these (SOP class, stored syntax) pairs."""
    by_class: dict[str, list[str]] = {}
    for sop_class, syntax in pairs:
        syntaxes = by_class.setdefault(sop_class, [])
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    out = [(c, [EXPLICIT_VR_LE, IMPLICIT_VR_LE]) for c in list(by_class)[:MAX_CONTEXTS]]
    for sop_class, syntaxes in by_class.items():
        for syntax in syntaxes:
            if len(out) >= MAX_CONTEXTS:
                return out
            out.append((sop_class, [syntax]))
    return out


__all__ = ["MAX_CONTEXTS", "destination_syntaxes"]
