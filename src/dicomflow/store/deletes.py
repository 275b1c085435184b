"""Delete a study, a series or an instance from the index, in one transaction with its change-log rows.

:func:`delete` is what ``DELETE /studies/...`` and ``dicomflow delete`` run
(through :meth:`~dicomflow.store.postgres.PgStore.delete`). One transaction:

1. the series the target covers, locked (the series advisory locks of
   :func:`~dicomflow.store.batch.series_lock_key`, ascending, as the
   consumer takes them), then the change-log lock
   (:data:`~dicomflow.store.changes.CHANGE_LOG_LOCK`);
2. one statement: the instance rows and the receipts are deleted, every
   earlier change-log row of those instances becomes ``deleted``, a
   ``delete`` row per instance is written (key order), and the objects the
   deleted rows named (receipts' ``file_path``, ``pixel_data_location``,
   ``thumbnail_location``) go to ``dicom_purge_queue`` for
   ``dicomflow purge``, due after ``purge_delay``, with the deleted
   instance row (the purge republishes it as ``DELETED``);
3. the touched series are recounted; the state rows of series left without
   instances are deleted (their last row kept on the purge queue), the
   others read back.

Once it commits, QIDO-RS and WADO-RS (which answer from these rows) stop
returning the data. Everything is scoped by the tenant: another tenant's
rows are never touched, and "not found" is all a caller learns of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import kwargs_row

from dicomflow.models import DicomStateMeta
from dicomflow.store.batch import series_lock_key
from dicomflow.store.changes import CHANGE_LOG_LOCK
from dicomflow.store.sql import LOCK_SERIES, READ_STATES, RECOUNT, SERIES_ARRAYS


@dataclass(frozen=True)
class DeleteTarget:
    """What to delete: a study, or one of its series, or one instance of that series, of one tenant."""

    tenant_id: str
    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    def __post_init__(self) -> None:
        if self.sop_uid is not None and self.series_uid is None:
            raise ValueError("an instance is deleted with its series UID")

    @property
    def level(self) -> str:
        return "instance" if self.sop_uid else "series" if self.series_uid else "study"

    def where(self, alias: str | None = None) -> sql.Composed:
        """``tenant_id = %s AND study_uid = %s [AND series_uid = %s [AND sop_uid = %s]]``, values bound."""
        names = ["tenant_id", "study_uid"]
        if self.series_uid is not None:
            names.append("series_uid")
        if self.sop_uid is not None:
            names.append("sop_uid")
        return sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(alias, n) if alias else sql.Identifier(n), sql.Placeholder())
            for n in names
        )

    def params(self) -> list[str]:
        return [v for v in (self.tenant_id, self.study_uid, self.series_uid, self.sop_uid) if v is not None]


@dataclass(frozen=True)
class DeletedInstance:
    """One instance the delete removed, with its ``delete`` row's sequence."""

    sequence: int
    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True)
class DeleteResult:
    """What one delete did (empty when nothing of the target exists in the tenant)."""

    target: DeleteTarget
    instances: list[DeletedInstance] = field(default_factory=list)
    #: Series whose last instance went (their state rows are deleted too).
    emptied_series: list[str] = field(default_factory=list)
    #: Series still holding instances, as stored after the recount.
    remaining_states: list[DicomStateMeta] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.instances or self.emptied_series)


_DELETE = """
WITH img AS (DELETE FROM dicom_image_meta WHERE {where} RETURNING *),
rec AS (DELETE FROM dicom_object_meta WHERE {where} RETURNING *),
refs AS (SELECT tenant_id, study_uid, series_uid, sop_uid, unnest(ARRAY[pixel_data_location, thumbnail_location]) AS loc,
                to_jsonb(img) AS image, NULL::jsonb AS receipt FROM img
         UNION ALL SELECT tenant_id, study_uid, series_uid, sop_uid, file_path, NULL::jsonb, to_jsonb(rec) FROM rec),
gone AS (SELECT tenant_id, study_uid, series_uid, sop_uid,
                coalesce(array_agg(DISTINCT loc) FILTER (WHERE loc IS NOT NULL), '{{}}') AS locations,
                (array_agg(image) FILTER (WHERE image IS NOT NULL))[1] AS image,
                jsonb_agg(receipt) FILTER (WHERE receipt IS NOT NULL) AS receipts
         FROM refs GROUP BY tenant_id, study_uid, series_uid, sop_uid),
marked AS (UPDATE dicom_change_log AS c SET state = 'deleted' FROM gone AS g
           WHERE c.tenant_id = g.tenant_id AND c.study_uid = g.study_uid AND c.series_uid = g.series_uid
           AND c.sop_uid = g.sop_uid AND c.state <> 'deleted'),
logged AS (INSERT INTO dicom_change_log (tenant_id, study_uid, series_uid, sop_uid, action, state)
           SELECT tenant_id, study_uid, series_uid, sop_uid, 'delete', 'deleted' FROM gone
           ORDER BY tenant_id, study_uid, series_uid, sop_uid
           RETURNING sequence, tenant_id, study_uid, series_uid, sop_uid)
INSERT INTO dicom_purge_queue (sequence, tenant_id, study_uid, series_uid, sop_uid, locations, not_before, image,
                               receipts)
SELECT l.sequence, l.tenant_id, l.study_uid, l.series_uid, l.sop_uid, g.locations,
       now() + {delay} * interval '1 second', g.image, g.receipts
FROM logged AS l JOIN gone AS g USING (tenant_id, study_uid, series_uid, sop_uid)
RETURNING sequence, study_uid, series_uid, sop_uid
"""

_SERIES_OF = (
    "SELECT series_uid FROM dicom_image_meta WHERE {where} "
    "UNION SELECT series_uid FROM dicom_state_meta WHERE {state_where}"
)

_DELETE_EMPTY = sql.SQL(
    "DELETE FROM dicom_state_meta AS s USING {series} WHERE s.tenant_id = k.tenant_id AND s.study_uid = k.study_uid "
    "AND s.series_uid = k.series_uid AND NOT EXISTS (SELECT 1 FROM dicom_image_meta AS i WHERE "
    "i.tenant_id = s.tenant_id AND i.study_uid = s.study_uid AND i.series_uid = s.series_uid) "
    "RETURNING s.series_uid, to_jsonb(s)::text"
).format(series=SERIES_ARRAYS)

#: The emptied series' last state row, on the first purge-queue row of the series this delete wrote.
_KEEP_STATE = (
    "UPDATE dicom_purge_queue SET series_state = %s::jsonb WHERE sequence = (SELECT min(sequence) "
    "FROM dicom_purge_queue WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s AND sequence = ANY(%s))"
)


def _series_of(cur: psycopg.Cursor[Any], target: DeleteTarget) -> list[str]:
    """The series the target covers (an instance: its series, if the instance exists)."""
    if target.sop_uid is not None:
        state_where: sql.Composable = sql.SQL("false")
        params = target.params()
    else:
        state_where = target.where()
        params = target.params() * 2
    stmt = sql.SQL(_SERIES_OF).format(where=target.where(), state_where=state_where)
    return sorted(str(r[0]) for r in cur.execute(stmt, params).fetchall())


def delete(conn: psycopg.Connection[Any], target: DeleteTarget, *, purge_delay_s: float) -> DeleteResult:
    """Delete ``target`` and write its change-log and purge-queue rows, in one transaction.

    Returns an empty result (nothing written) when the target does not
    exist in the tenant.

    Raises:
        psycopg.Error: the transaction was rolled back; the caller's retry
            policy classifies it.
    """
    with conn.transaction(), conn.cursor() as cur:
        series = _series_of(cur, target)
        if not series:
            return DeleteResult(target)
        cur.execute(LOCK_SERIES, (sorted(series_lock_key(target.tenant_id, target.study_uid, s) for s in series),))
        cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", CHANGE_LOG_LOCK)
        where = target.where()
        stmt = sql.SQL(_DELETE).format(where=where, delay=sql.Placeholder())
        rows = cur.execute(stmt, [*target.params(), *target.params(), purge_delay_s]).fetchall()
        instances = sorted((DeletedInstance(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows),
                           key=lambda d: d.sequence)
        arrays = [[target.tenant_id] * len(series), [target.study_uid] * len(series), series]
        cur.execute(RECOUNT, arrays)
        emptied_rows = cur.execute(_DELETE_EMPTY, arrays).fetchall()
        sequences = [i.sequence for i in instances]
        for series_uid, state_json in emptied_rows:
            cur.execute(_KEEP_STATE, (state_json, target.tenant_id, target.study_uid, series_uid, sequences))
        emptied = sorted(str(r[0]) for r in emptied_rows)
        with conn.cursor(row_factory=kwargs_row(DicomStateMeta)) as reader:
            remaining = reader.execute(READ_STATES, arrays).fetchall()
    remaining.sort(key=lambda s: s.series_uid)
    return DeleteResult(target, instances, emptied, remaining)


__all__ = ["DeleteResult", "DeleteTarget", "DeletedInstance", "delete"]
