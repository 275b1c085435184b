"""Read queries of the change feed (``GET /changefeed``, ``/changefeed/latest``) over ``dicom_change_log``.

Tenant first in every query, as in :mod:`~dicomflow.store.queries`; values
bound. Entries come in sequence order; a time window filters on the row's
timestamp, which grows with the sequence (see migration 0004), so offset
paging over a window returns each entry once as long as the window's end
lies in the past.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import psycopg


@dataclass(frozen=True)
class Change:
    """One row of the change log."""

    sequence: int
    study_uid: str
    series_uid: str
    sop_uid: str
    action: str
    timestamp: dt.datetime
    state: str


_COLUMNS = "sequence, study_uid, series_uid, sop_uid, action, timestamp, state"


async def changes(
    conn: psycopg.AsyncConnection[Any], tenant: str, *, start: dt.datetime | None = None,
    end: dt.datetime | None = None, offset: int = 0, limit: int = 100,
) -> list[Change]:
    """The tenant's entries with ``start <= timestamp < end``, in sequence order, ``offset`` skipped, at most ``limit``."""
    conditions = ["tenant_id = %s"]
    params: list[Any] = [tenant]
    if start is not None:
        conditions.append("timestamp >= %s")
        params.append(start)
    if end is not None:
        conditions.append("timestamp < %s")
        params.append(end)
    query = (f"SELECT {_COLUMNS} FROM dicom_change_log WHERE {' AND '.join(conditions)} "
             "ORDER BY sequence OFFSET %s LIMIT %s")
    cur = await conn.execute(query.encode(), [*params, offset, limit])
    return [Change(*row) for row in await cur.fetchall()]


async def latest(conn: psycopg.AsyncConnection[Any], tenant: str) -> Change | None:
    """The tenant's newest entry (None on an empty feed)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM dicom_change_log WHERE tenant_id = %s ORDER BY sequence DESC LIMIT 1".encode(),
        [tenant])
    row = await cur.fetchone()
    return Change(*row) if row else None


__all__ = ["Change", "changes", "latest"]
