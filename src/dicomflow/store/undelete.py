"""Undo a delete before its purge: the index rows back from the purge queue, as new ``create`` changes.

A delete keeps what it removed on its ``dicom_purge_queue`` rows (the
instance row, its receipts, an emptied series' last state row), and the
objects stay until ``dicomflow purge`` takes the row, which it does only
after ``lifecycle.purge_delay``. :func:`undelete` takes those rows back in
one transaction under the same locks as a delete: the rows are re-inserted
(``ON CONFLICT DO NOTHING``: an instance stored again meanwhile stays as it
is), a ``create`` change-log row is written per instance put back (the
earlier rows stay ``deleted``: the feed's history is not rewritten), the
series are recounted, and the queue rows go. A purge in progress holds its
rows locked: the undelete waits for it, then finds nothing left.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from dicomflow.store.batch import series_lock_key
from dicomflow.store.changes import CHANGE_LOG_LOCK
from dicomflow.store.deletes import DeleteTarget
from dicomflow.store.sql import LOCK_SERIES, RECOUNT

_SERIES = "SELECT DISTINCT series_uid FROM dicom_purge_queue WHERE {where}"

_RESTORE = """
WITH q AS (DELETE FROM dicom_purge_queue WHERE {where} RETURNING *),
st AS (INSERT INTO dicom_state_meta SELECT (jsonb_populate_record(NULL::dicom_state_meta, series_state)).*
       FROM q WHERE series_state IS NOT NULL ON CONFLICT DO NOTHING),
rec AS (INSERT INTO dicom_object_meta SELECT (jsonb_populate_record(NULL::dicom_object_meta, r.value)).*
        FROM q, jsonb_array_elements(coalesce(q.receipts, '[]'::jsonb)) AS r ON CONFLICT DO NOTHING),
img AS (INSERT INTO dicom_image_meta SELECT (jsonb_populate_record(NULL::dicom_image_meta, image)).*
        FROM q WHERE image IS NOT NULL ON CONFLICT DO NOTHING
        RETURNING tenant_id, study_uid, series_uid, sop_uid)
INSERT INTO dicom_change_log (tenant_id, study_uid, series_uid, sop_uid, action, state)
SELECT tenant_id, study_uid, series_uid, sop_uid, 'create', 'current' FROM img
ORDER BY tenant_id, study_uid, series_uid, sop_uid
RETURNING sop_uid
"""


def undelete(conn: psycopg.Connection[Any], target: DeleteTarget) -> list[str]:
    """Put back what deletes of ``target`` removed and the purge has not; returns the SOP Instance UIDs restored.

    Raises:
        psycopg.Error: rolled back; the caller's retry policy classifies it.
    """
    with conn.transaction(), conn.cursor() as cur:
        where = target.where()
        series = sorted(str(r[0]) for r in cur.execute(sql.SQL(_SERIES).format(where=where), target.params()))
        if not series:
            return []
        cur.execute(LOCK_SERIES, (sorted(series_lock_key(target.tenant_id, target.study_uid, s) for s in series),))
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", CHANGE_LOG_LOCK)
        restored = sorted(str(r[0]) for r in cur.execute(sql.SQL(_RESTORE).format(where=where),
                                                         target.params()).fetchall())
        cur.execute(RECOUNT, [[target.tenant_id] * len(series), [target.study_uid] * len(series), series])
    return restored


__all__ = ["undelete"]
