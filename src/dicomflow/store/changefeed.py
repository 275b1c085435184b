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
from psycopg.rows import dict_row

from dicomflow.store.queries import StoredInstance


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


#: The instances a page's current entries name, with their newest receipt, as queries.instances gives them.
_INSTANCES_OF = (
    "SELECT i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.patient_id, i.transfer_syntax_uid,"
    " o.file_path, o.trace_id, o.transfer_status, o.target_ts, o.number_of_frames, i.instance_number,"
    " i.pixel_data_location, i.thumbnail_location "
    "FROM unnest(%s::text[], %s::text[], %s::text[]) AS k(study_uid, series_uid, sop_uid) "
    "JOIN dicom_image_meta i ON i.tenant_id = %s AND i.study_uid = k.study_uid AND i.series_uid = k.series_uid"
    " AND i.sop_uid = k.sop_uid "
    "JOIN LATERAL (SELECT r.file_path, r.trace_id, r.transfer_status, r.target_ts, r.number_of_frames"
    " FROM dicom_object_meta r WHERE r.tenant_id = i.tenant_id AND r.study_uid = i.study_uid"
    " AND r.series_uid = i.series_uid AND r.sop_uid = i.sop_uid ORDER BY r.created_time DESC LIMIT 1) o ON true"
)


async def instances_of(conn: psycopg.AsyncConnection[Any], tenant: str,
                       keys: list[tuple[str, str, str]]) -> list[StoredInstance]:
    """The indexed instances of the (study, series, SOP) keys, in one query (those not indexed are left out)."""
    if not keys:
        return []
    columns = [list(c) for c in zip(*keys, strict=True)]
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_INSTANCES_OF.encode(), [*columns, tenant])
        return [StoredInstance(**row) for row in await cur.fetchall()]


__all__ = ["Change", "changes", "instances_of", "latest"]
