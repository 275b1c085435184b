"""The PostgreSQL store: one transaction per batch, bulk idempotent upserts.

A batch (receipts, series states, instances of up to a few hundred store
events) is written as:

1. merge rows with the same primary key (last one wins, in input order;
   PostgreSQL refuses an ``INSERT ... ON CONFLICT`` that touches one row
   twice) and sort them by primary key;
2. ``BEGIN``; take a transaction advisory lock per touched series, in
   ascending order;
3. binary ``COPY`` each kind of row into a temporary table of the session
   (created once per connection, emptied at commit; column types read from
   the catalog), then ``INSERT ... SELECT ... ORDER BY <key> ON CONFLICT
   (<key>) DO UPDATE``, which skips rows that would not change (a replay
   writes nothing);
4. recompute ``series_related_instances`` of the touched series from
   ``dicom_image_meta`` and read the state rows back;
5. write the change log (:mod:`~dicomflow.store.changes`): the instances
   the upsert created or changed, one ``INSERT ... SELECT``, under the
   change-log lock;
6. ``COMMIT`` (``synchronous_commit`` as configured on the server: on).

Why the series locks: two consumers writing instances of one series at the
same time would each count the other's uncommitted rows out, and the last
commit would store a count that is too low. Holding the series lock for the
transaction makes the second writer count after the first one committed. All
writers take their locks in the same order, and every row a transaction
writes belongs to a series it holds, so writers cannot deadlock on rows
either; a deadlock or serialization failure is still retried, in case the
server's configuration makes one happen.

The lock table is shared memory: a transaction holds one lock per distinct
series of its batch, so ``max_locks_per_transaction * max_connections``
must exceed consumers x distinct series per batch (default 64 x 100 = 6400).

The parts: :mod:`~dicomflow.store.sql` (statements), :mod:`~dicomflow.store.batch`
(steps 1 and the lock keys), :mod:`~dicomflow.store.session` (what a connection
prepares once), :mod:`~dicomflow.store.connection` (reconnects, retries and
which failure is poison); this module ties them into one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import kwargs_row

from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import DatabaseSettings
from dicomflow.store import deletes, undelete
from dicomflow.store import migrate as migrations
from dicomflow.store.batch import Batch
from dicomflow.store.changes import CHANGE_LOG_LOCK
from dicomflow.store.connection import StoreConnection, first_line
from dicomflow.store.deletes import DeleteResult, DeleteTarget
from dicomflow.store.exceptions import StoreDataError
from dicomflow.store.session import Session, copy_culprit, int4_culprit
from dicomflow.store.sql import IMAGES, RECEIPTS, STATES, TABLES, Table, count_rows

log = logging.getLogger(__name__)

R = TypeVar("R", bound=msgspec.Struct)


@dataclass(frozen=True)
class StoreStatus:
    """What ``dicomflow db status`` shows."""

    applied: list[migrations.AppliedMigration]
    pending: list[str]
    #: Table -> row count (None when the table does not exist yet).
    counts: dict[str, int | None]
    #: False when counts are the statistics' estimates (fast on big tables).
    exact: bool


class PgStore:
    """Writes batches to PostgreSQL over one reused connection.

    Thread-safe (one call at a time); for parallel writes use one store per
    thread. No I/O happens until the first call.
    """

    def __init__(self, db: DatabaseSettings, *, max_attempts: int = 5) -> None:
        self._link = StoreConnection(db, max_attempts=max_attempts)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns the versions applied now.

        Raises:
            StoreError: cannot connect, or a migration failed (rolled back;
                earlier versions stay applied).
        """
        with self._lock:
            applied = self._link.run("migrate", migrations.migrate)
            if applied:
                # The temporary tables and prepared statements of this
                # session were shaped like the old tables: start afresh.
                self._link.discard()
                log.info("applied migrations %s to %s", ", ".join(applied), self.where)
            return applied

    def write_batch(
        self,
        receipts: Sequence[DicomStoreMeta],
        states: Sequence[DicomStateMeta],
        images: Sequence[DicomImageMeta],
    ) -> list[DicomStateMeta]:
        """Upsert one batch in one transaction; return the touched series' states.

        Rows with the same primary key are merged first (last one wins; a
        state keeps the first created_time). Replaying a batch changes
        nothing. State rows keep the created_time of their first insert, take
        the later updated_time, and get series_related_instances recomputed
        from the instance rows.

        Returns:
            The state rows as stored, one per series touched by ``states`` or
            ``images`` that has a state row, in primary-key order.

        Raises:
            StoreDataError: PostgreSQL refused a value (poison: retrying
                fails the same way); ``.record`` names the record when the
                server or the encoder said which row it was. Nothing of the
                batch was written.
            StoreError: transient (connection lost twice, server down,
                deadlocks beyond the retries, schema not migrated). Nothing
                of the batch was written; the next call reconnects.
        """
        batch = Batch.prepare(receipts, states, images)
        if batch.empty:
            return []
        with self._lock:
            started = time.perf_counter()
            result = self._link.run("write batch", lambda conn: self._write(conn, batch))
            log.debug(
                "wrote %s receipts, %s states, %s images (%s series) in %.1f ms",
                len(batch.receipts), len(batch.states), len(batch.images), len(batch.series),
                (time.perf_counter() - started) * 1000,
            )
            return result

    def delete(self, target: DeleteTarget, *, purge_delay_s: float = 0.0) -> DeleteResult:
        """Delete a study, series or instance of one tenant with its change-log rows, in one transaction.

        See :mod:`~dicomflow.store.deletes`. An empty result (``found`` false)
        when the target does not exist in the tenant.

        Raises:
            StoreError: transient (as :meth:`write_batch`); nothing was deleted.
        """
        with self._lock:
            result = self._link.run("delete", lambda conn: deletes.delete(conn, target, purge_delay_s=purge_delay_s))
            log.info("deleted %s %s of tenant %s: %d instances", target.level,
                     target.sop_uid or target.series_uid or target.study_uid, target.tenant_id, len(result.instances))
            return result

    def undelete(self, target: DeleteTarget) -> list[str]:
        """Put back what deletes of ``target`` removed and the purge has not (see :mod:`~dicomflow.store.undelete`).

        Returns the SOP Instance UIDs restored (empty: nothing recoverable).

        Raises:
            StoreError: transient; nothing was restored.
        """
        with self._lock:
            restored = self._link.run("undelete", lambda conn: undelete.undelete(conn, target))
            log.info("restored %d instances of %s %s of tenant %s", len(restored), target.level,
                     target.sop_uid or target.series_uid or target.study_uid, target.tenant_id)
            return restored

    def status(self, *, exact: bool = True) -> StoreStatus:
        """Applied and pending migrations, and row counts (exact or estimated).

        Raises:
            StoreError: cannot connect or query.
        """
        with self._lock:
            return self._link.run("status", lambda conn: self._status(conn, exact))

    def backend_pid(self) -> int | None:
        """PID of the server process behind the current connection (None before the first call)."""
        return self._link.backend_pid()

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the database, for messages (never the password)."""
        return self._link.where

    def close(self) -> None:
        """Close the connection; the store may still be used again (it reconnects)."""
        with self._lock:
            self._link.discard()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the batch transaction

    def _write(self, conn: psycopg.Connection[Any], batch: Batch) -> list[DicomStateMeta]:
        session = self._link.session(conn)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(session.lock, (batch.locks,))
            self._upsert(cur, session, RECEIPTS, batch.receipts)
            changed = self._upsert(cur, session, IMAGES, batch.images)
            self._upsert(cur, session, STATES, batch.states)
            if not batch.series:
                return []
            columns = [list(c) for c in zip(*batch.series, strict=True)]
            cur.execute(session.recount, columns)
            with conn.cursor(row_factory=kwargs_row(DicomStateMeta)) as reader:
                rows = reader.execute(session.read, columns).fetchall()
            if changed:
                # Last, so the change-log lock (held to the commit) serialises as little as possible.
                cur.execute(session.change_lock, CHANGE_LOG_LOCK)
                cur.execute(session.record_changes)
        rows.sort(key=STATES.key_of())
        return rows

    def _upsert(self, cur: psycopg.Cursor[Any], session: Session, table: Table[R], records: list[R]) -> int:
        """Binary COPY ``records`` (sorted, unique keys) into the temp table, then upsert them.

        Returns the number of rows inserted or changed (0 for a replay).

        Raises:
            StoreDataError: naming the record when the encoder or PostgreSQL
                says which one it was.
        """
        if not records:
            return 0
        astuple = msgspec.structs.astuple
        index = 0
        try:
            with cur.copy(session.copy[table.name]) as copy:
                copy.set_types(session.types[table.name])
                write_row = copy.write_row
                # index names the record in the except clauses below
                for index, record in enumerate(records):  # noqa: B007
                    write_row(astuple(record))
        except (UnicodeEncodeError, OverflowError, TypeError) as exc:
            # Client side, on the row being written: text that is not
            # encodable, an integer beyond int8, a value of the wrong type.
            raise StoreDataError(
                f"{table.name}: cannot encode a {type(records[index]).__name__}: {exc}",
                table=table.name, record=records[index],
            ) from exc
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # A server-side error names the COPY line; a client-side one has
            # no SQLSTATE and happened on the row being written.
            culprit = copy_culprit(exc, records) if exc.sqlstate else records[index]
            raise StoreDataError(
                f"{table.name}: PostgreSQL refused a value: {first_line(exc)}",
                table=table.name, record=culprit, sqlstate=exc.sqlstate,
            ) from exc
        try:
            cur.execute(session.upsert[table.name])
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            culprit = None
            if isinstance(exc, pg_errors.NumericValueOutOfRange):
                culprit = int4_culprit(records, session.int4[table.name])
            raise StoreDataError(
                f"{table.name}: PostgreSQL refused a row: {first_line(exc)}",
                table=table.name, record=culprit, sqlstate=exc.sqlstate,
            ) from exc
        return max(cur.rowcount, 0)

    def _status(self, conn: psycopg.Connection[Any], exact: bool) -> StoreStatus:
        applied = migrations.applied_migrations(conn)
        done = {m.version for m in applied}
        pending = [m.version for m in migrations.available_migrations() if m.version not in done]
        counts: dict[str, int | None] = {}
        for table in TABLES:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if not row or not row[0]:
                counts[table] = None
            elif exact:
                found = conn.execute(count_rows(table)).fetchone()
                counts[table] = int(found[0]) if found else 0
            else:
                found = conn.execute(
                    "SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = to_regclass(%s)", (table,)
                ).fetchone()
                counts[table] = int(found[0]) if found else 0
        return StoreStatus(applied=applied, pending=pending, counts=counts, exact=exact)



__all__ = ["PgStore", "StoreStatus"]
