"""When a study's or series' indexed content last changed, cheaply: the marker the web's answer caches compare.

:func:`change_marker` is ``(instance rows, receipts, receipts' checksum)``
of the study or series: ``dicom_image_meta`` rows counted on the primary
key's prefix, and the ``dicom_object_meta`` rows (one per store event, never
updated in place except by replays of the same event) counted and their
trace ids summed as 64-bit hashes (``hashtextextended``), on
``dicom_object_meta_series_idx``. A new instance adds an instance row and a
receipt; an instance stored again (replaced) adds a receipt, whose file is
then the one served; a deleted instance takes its row away (and, if its
receipts go too, their hashes). So any of these changes the marker, even a
deletion and an addition between two requests, which leave both counts as
they were but not the checksum (up to a 64-bit hash collision). A replay of
an event already indexed changes nothing in it and nothing that is served.

Why not ``max(updated_time)``: the times come from the clocks of the
machines that parsed the events, and a replacement parsed on a machine
whose clock is behind would not move the maximum. The marker needs no clock.

Why not PostgreSQL ``LISTEN`` / ``NOTIFY``: a notification missed while a
server's listening connection was down would leave a stale answer with
nothing to correct it, and every server process would hold one more
connection; this query is one round trip the request spends anyway, and two
index scans of the series' few hundred entries (well under a millisecond of
the server's time for the 500-instance series, inside the warm figures of
``benchmarks/REPORT.md``).
"""

from __future__ import annotations

from typing import Any

import psycopg

Marker = tuple[int, int, int]

_COUNTS = (
    "SELECT i.n, r.n, r.h FROM (SELECT count(*) AS n FROM dicom_image_meta WHERE {where}) i,"
    " (SELECT count(*) AS n, coalesce(sum(hashtextextended(trace_id, 0)), 0) AS h FROM dicom_object_meta"
    " WHERE {where}) r"
)
_SERIES = _COUNTS.format(where="tenant_id = %s AND study_uid = %s AND series_uid = %s").encode()
_STUDY = _COUNTS.format(where="tenant_id = %s AND study_uid = %s").encode()


async def change_marker(conn: psycopg.AsyncConnection[Any], tenant: str, study_uid: str,
                        series_uid: str | None = None) -> Marker:
    """``(instance rows, receipts, receipts' checksum)`` of the series (or the whole study when ``series_uid`` is None)."""
    if series_uid is None:
        query, params = _STUDY, [tenant, study_uid] * 2
    else:
        query, params = _SERIES, [tenant, study_uid, series_uid] * 2
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row is not None else (0, 0, 0)


__all__ = ["Marker", "change_marker"]
