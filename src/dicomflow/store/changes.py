"""The change log (``dicom_change_log``): what every index write records, in the same transaction.

Three writers, one protocol:

- the consumer's batch (:meth:`~dicomflow.store.postgres.PgStore.write_batch`):
  the instance upsert's ``RETURNING`` says which rows it inserted (``create``)
  and which it changed (``update``: a re-sent instance under
  ``ingest.duplicates = "replace"``); a replayed batch changes no row, so it
  records nothing. Those keys go to a session temporary table
  (:data:`CHANGES_TEMP`), then at the end of the transaction one
  ``INSERT ... SELECT`` writes them all (:data:`RECORD`);
- a delete (:mod:`dicomflow.store.deletes`): ``delete`` rows;
- nothing else writes instance rows' existence (the image workers change
  locations only, which is not a change of the instance).

Order: each writer takes :data:`CHANGE_LOG_LOCK` (a transaction advisory
lock, after its series locks, so lock order stays acyclic) just before it
inserts change rows and holds it until commit. The identity therefore hands
out numbers in commit order, and a reader past sequence N never sees a lower
number appear later: the outbox publisher and change-feed clients can page
by sequence without missing a row. The serialised part is one small INSERT
and the commit.

State: the newest row of an existing instance is ``current``; an update
marks the instance's earlier rows ``replaced``; a delete marks all its rows
(and writes its own) ``deleted``.
"""

from __future__ import annotations

from psycopg import sql

from dicomflow.store.sql import IMAGES

#: Transaction advisory lock (two int4 keys, apart from the series' one-bigint
#: keys and the migration lock "dflo", 1) ordering change-log writers: "dflo", 2.
CHANGE_LOG_LOCK: tuple[int, int] = (0x64666C6F, 2)

#: Session temporary table collecting one batch's changed instances.
CHANGES_TEMP = "dicomflow_batch_changes"

CREATE_CHANGES_TEMP = sql.SQL(
    "CREATE TEMP TABLE IF NOT EXISTS {} (tenant_id text NOT NULL, study_uid text NOT NULL, "
    "series_uid text NOT NULL, sop_uid text NOT NULL, action text NOT NULL) ON COMMIT DELETE ROWS"
).format(sql.Identifier(CHANGES_TEMP))

LOCK_CHANGE_LOG = sql.SQL("SELECT pg_advisory_xact_lock({}, {})").format(sql.Placeholder(), sql.Placeholder())


def recording_upsert() -> sql.Composed:
    """The instance upsert, its inserted and changed rows collected in :data:`CHANGES_TEMP`.

    ``xmax = 0`` on a returned row means the INSERT created it; otherwise the
    ON CONFLICT branch updated it (rows it would not change are not returned).
    """
    return sql.SQL(
        "WITH up AS ({upsert} RETURNING tenant_id, study_uid, series_uid, sop_uid, (xmax = 0) AS created) "
        "INSERT INTO {temp} (tenant_id, study_uid, series_uid, sop_uid, action) "
        "SELECT tenant_id, study_uid, series_uid, sop_uid, CASE WHEN created THEN 'create' ELSE 'update' END FROM up"
    ).format(upsert=IMAGES.upsert(), temp=sql.Identifier(CHANGES_TEMP))


#: After LOCK_CHANGE_LOG: mark the updated instances' older rows replaced, write the batch's rows.
RECORD = sql.SQL(
    "WITH marked AS (UPDATE dicom_change_log AS c SET state = 'replaced' FROM {temp} AS b "
    "WHERE b.action = 'update' AND c.state = 'current' AND c.tenant_id = b.tenant_id AND c.study_uid = b.study_uid "
    "AND c.series_uid = b.series_uid AND c.sop_uid = b.sop_uid) "
    "INSERT INTO dicom_change_log (tenant_id, study_uid, series_uid, sop_uid, action, state) "
    "SELECT tenant_id, study_uid, series_uid, sop_uid, action, 'current' FROM {temp} "
    "ORDER BY tenant_id, study_uid, series_uid, sop_uid"
).format(temp=sql.Identifier(CHANGES_TEMP))


__all__ = ["CHANGES_TEMP", "CHANGE_LOG_LOCK", "CREATE_CHANGES_TEMP", "LOCK_CHANGE_LOG", "RECORD", "recording_upsert"]
