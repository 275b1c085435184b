"""The query/retrieve section ``[qr]`` of ``dicomflow scp``: C-FIND, C-MOVE and C-GET on the index (docs/qr.md).

Part of the schema (:mod:`.schema` holds it in :class:`~dicomflow.settings.schema.Settings`),
in a module of its own to keep the schema's file short; imports nothing of the stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class QrSettings:
    """Query/retrieve served by ``dicomflow scp`` from the index and the storage layer.

    ``max_results``: matches one C-FIND answers at most; past it the answer
    ends with the warning 0xB001 (PS3.4 C.4.1.1.4: "matching reached response
    limit"), after the first ``max_results`` matches. ``connections``: the
    receiver process's PostgreSQL connections for queries (opened on the first
    C-FIND, shared by its associations).
    """

    max_results: int = 1000
    connections: int = 4
    #: Answer the C-MOVE / C-GET contexts (on either receiver engine, docs/qr.md). Needs ``[database]``
    #: to reach the index.
    enabled: bool = False
    #: C-MOVE destinations: AE title -> "host:port". A Move Destination not listed answers 0xA801.
    destinations: Mapping[str, str] = field(default_factory=dict)
    #: Seconds to wait for a move destination to accept the sub-operations' association.
    move_connect_timeout_s: float = 10.0


def parse_destination(value: str) -> tuple[str, int] | None:
    """``"host:port"`` as (host, port); None when it is not one (the loader names the key)."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host.strip("[]"), int(port)


__all__ = ["QrSettings", "parse_destination"]
