"""The query/retrieve section ``[qr]`` of ``dicomflow scp`` (C-FIND; C-MOVE / C-GET destinations beside it).

Part of the schema (:mod:`.schema` holds it in :class:`~dicomflow.settings.schema.Settings`);
in a module of its own to keep the schema's file short.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class QrSettings:
    """C-FIND on the index (docs/qr.md).

    ``max_results``: matches one C-FIND answers at most; past it the answer
    ends with the warning 0xB001 (PS3.4 C.4.1.1.4: "matching reached response
    limit"), after the first ``max_results`` matches. ``connections``: the
    receiver process's PostgreSQL connections for queries (opened on the first
    C-FIND, shared by its associations).
    """

    max_results: int = 1000
    connections: int = 4
