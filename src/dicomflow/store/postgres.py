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
5. ``COMMIT`` (``synchronous_commit`` as configured on the server: on).

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

Connection loss (a server restart, a terminated backend, a network cut) is
noticed on first use: the store reconnects once and writes the batch on the
new connection, then gives up with a transient
:class:`~dicomflow.errors.StoreError`; the next call reconnects by itself.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec
import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import kwargs_row

from dicomflow.errors import StoreError
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import DatabaseSettings
from dicomflow.store import migrate as migrations
from dicomflow.store.exceptions import StoreDataError

log = logging.getLogger(__name__)

R = TypeVar("R", bound=msgspec.Struct)
T = TypeVar("T")

SERIES_KEY: tuple[str, str, str] = ("tenant_id", "study_uid", "series_uid")

#: Tables dicomflow writes, for ``db status``.
TABLES: tuple[str, ...] = ("dicom_object_meta", "dicom_state_meta", "dicom_image_meta")


# --------------------------------------------------------------------------- SQL per table


@dataclass(frozen=True)
class _Table(Generic[R]):
    """How one model maps onto one table: columns, key and conflict rules.

    ``keep`` columns are written on insert only (created_time survives
    replays and later instances); ``newest`` columns take the later of the
    stored and the new value (updated_time never goes back when an old
    message is replayed); ``skip`` columns are set elsewhere
    (series_related_instances is recomputed from the instance rows).
    """

    name: str
    model: type[R]
    key: tuple[str, ...]
    keep: tuple[str, ...] = ()
    newest: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    columns: tuple[str, ...] = field(init=False)
    temp: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.model.__struct_fields__))
        object.__setattr__(self, "temp", f"dicomflow_batch_{self.name}")

    def _cols(self, prefix: str | None = None) -> sql.Composed:
        if prefix is None:
            return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        return sql.SQL(", ").join(sql.Identifier(prefix, c) for c in self.columns)

    def _key(self) -> sql.Composed:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.key)

    def create_temp(self) -> sql.Composed:
        """A session temporary table shaped like the target, emptied at every commit.

        Created once per connection rather than per batch: no catalog churn.
        """
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
            sql.Identifier(self.temp), sql.Identifier(self.name)
        )

    def widen(self, column: str) -> sql.Composed:
        """Make an ``integer`` column of the temp table ``bigint``.

        Binary COPY sends an int4 as 4 bytes that psycopg packs without a
        range check: 2**31 would arrive as -2**31. Sent as int8, the value
        reaches the server intact and the INSERT's cast to integer refuses it
        (22003) instead of storing a wrong number.
        """
        return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE bigint").format(
            sql.Identifier(self.temp), sql.Identifier(column)
        )

    def copy(self) -> sql.Composed:
        """Binary COPY in the model's field order (the order of ``msgspec.structs.astuple``)."""
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(self.temp), self._cols())

    def upsert(self) -> sql.Composed:
        """INSERT ... ON CONFLICT DO UPDATE, skipping rows the update would not change.

        The ``WHERE (new values) IS DISTINCT FROM (stored values)`` clause
        makes a replayed batch a no-op: no new row versions, no dead tuples.
        """
        assignments: list[tuple[str, sql.Composable]] = []
        for col in self.columns:
            if col in self.key or col in self.keep or col in self.skip:
                continue
            if col in self.newest:
                expr: sql.Composable = sql.SQL("GREATEST({}, {})").format(
                    sql.Identifier("t", col), sql.Identifier("excluded", col)
                )
            else:
                expr = sql.Identifier("excluded", col)
            assignments.append((col, expr))
        return sql.SQL(
            "INSERT INTO {table} AS t ({cols}) SELECT {cols} FROM {temp} ORDER BY {key} "
            "ON CONFLICT ({key}) DO UPDATE SET {sets} WHERE ({new}) IS DISTINCT FROM ({old})"
        ).format(
            table=sql.Identifier(self.name),
            cols=self._cols(),
            temp=sql.Identifier(self.temp),
            key=self._key(),
            sets=sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), e) for c, e in assignments),
            new=sql.SQL(", ").join(e for _, e in assignments),
            old=sql.SQL(", ").join(sql.Identifier("t", c) for c, _ in assignments),
        )

    def key_of(self) -> Callable[[R], tuple[str, ...]]:
        """The primary key of a record, as a tuple (sorts like the C collation)."""
        names = self.key
        if len(names) == 1:
            (name,) = names
            return lambda r: (getattr(r, name),)
        getter = attrgetter(*names)

        def key_of(record: R) -> tuple[str, ...]:
            key: tuple[str, ...] = getter(record)
            return key

        return key_of


RECEIPTS: _Table[DicomStoreMeta] = _Table("dicom_object_meta", DicomStoreMeta, key=("trace_id",))
STATES: _Table[DicomStateMeta] = _Table(
    "dicom_state_meta", DicomStateMeta, key=SERIES_KEY,
    keep=("created_time",), newest=("updated_time",), skip=("series_related_instances",),
)
IMAGES: _Table[DicomImageMeta] = _Table(
    "dicom_image_meta", DicomImageMeta, key=(*SERIES_KEY, "sop_uid"),
    keep=("created_time",), newest=("updated_time",),
)

_ALL: tuple[_Table[Any], ...] = (RECEIPTS, STATES, IMAGES)

_LOCK_SERIES = sql.SQL("SELECT pg_advisory_xact_lock(k) FROM unnest({}::bigint[]) AS k").format(sql.Placeholder())

_SERIES_ARRAYS = sql.SQL("unnest({}::text[], {}::text[], {}::text[]) AS k (tenant_id, study_uid, series_uid)").format(
    sql.Placeholder(), sql.Placeholder(), sql.Placeholder()
)

_RECOUNT = sql.SQL(
    "UPDATE dicom_state_meta AS s SET series_related_instances = c.n "
    "FROM (SELECT k.tenant_id, k.study_uid, k.series_uid, "
    "(SELECT count(*)::integer FROM dicom_image_meta AS i "
    "WHERE i.tenant_id = k.tenant_id AND i.study_uid = k.study_uid AND i.series_uid = k.series_uid) AS n "
    "FROM {series}) AS c "
    "WHERE s.tenant_id = c.tenant_id AND s.study_uid = c.study_uid AND s.series_uid = c.series_uid "
    "AND s.series_related_instances IS DISTINCT FROM c.n"
).format(series=_SERIES_ARRAYS)

_READ_STATES = sql.SQL("SELECT {} FROM dicom_state_meta AS s JOIN {} USING (tenant_id, study_uid, series_uid)").format(
    STATES._cols("s"), _SERIES_ARRAYS
)


# --------------------------------------------------------------------------- batch preparation


def series_lock_key(tenant_id: str, study_uid: str, series_uid: str) -> int:
    """The transaction advisory-lock key of one series: a stable signed 64-bit integer.

    Part of the write protocol: anything else that writes instance rows or
    series_related_instances must hold ``pg_advisory_xact_lock(key)`` for
    each series it touches, taken in ascending key order.

    Derived from the state table's primary key (not the patient), so two
    messages that disagree on the patient still lock the same row's series.
    A collision between two series costs only some waiting.
    """
    raw = "\x00".join((tenant_id, study_uid, series_uid)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def _strip_nul(records: Sequence[R]) -> Sequence[R]:
    """Remove NUL characters, which PostgreSQL text cannot hold.

    DICOM pads UIDs with NUL bytes; a decoder that forgets to strip them, or
    a crafted message, would otherwise make the whole batch fail forever.
    Checked on the JSON encoding first (fast, in C); rebuilt only when found.
    Text that cannot be encoded at all (a lone surrogate) is left for the
    COPY to refuse, naming its record.
    """
    if not records:
        return records
    try:
        if b"\\u0000" not in msgspec.json.encode(records):
            return records
    except UnicodeEncodeError:
        pass
    cleaned: list[R] = []
    changed = False
    for record in records:
        changes = {
            name: value.replace("\x00", "")
            for name in record.__struct_fields__
            if isinstance(value := getattr(record, name), str) and "\x00" in value
        }
        if changes:
            log.warning(
                "removed NUL characters from %s of %s %s",
                ", ".join(changes), type(record).__name__, _identify(record),
            )
            record = msgspec.structs.replace(record, **changes)
            changed = True
        cleaned.append(record)
    return cleaned if changed else records


def _identify(record: msgspec.Struct) -> str:
    """The UID that names a record in logs: trace id, SOP Instance UID or Series UID (never PHI)."""
    for name in ("trace_id", "sop_uid", "series_uid"):
        value = getattr(record, name, None)
        if isinstance(value, str):
            return value
    return "?"


def _merge(table: _Table[R], records: Sequence[R]) -> list[R]:
    """One record per primary key, the last one in input order, sorted by key."""
    key_of = table.key_of()
    merged: dict[tuple[str, ...], R] = {}
    for record in records:
        merged[key_of(record)] = record
    return [merged[k] for k in sorted(merged)]


def _merge_states(records: Sequence[DicomStateMeta]) -> list[DicomStateMeta]:
    """Like :func:`_merge`, but the merged row keeps the first created_time seen."""
    key_of = STATES.key_of()
    first_created: dict[tuple[str, ...], Any] = {}
    merged: dict[tuple[str, ...], DicomStateMeta] = {}
    for record in records:
        key = key_of(record)
        first_created.setdefault(key, record.created_time)
        merged[key] = record
    result = []
    for key in sorted(merged):
        record = merged[key]
        if record.created_time != first_created[key]:
            record = msgspec.structs.replace(record, created_time=first_created[key])
        result.append(record)
    return result


@dataclass(frozen=True)
class _Batch:
    """A batch ready to write: merged, sorted, cleaned; its series and their locks."""

    receipts: list[DicomStoreMeta]
    states: list[DicomStateMeta]
    images: list[DicomImageMeta]
    #: Series whose state rows are returned: those of states and images.
    series: list[tuple[str, str, str]]
    #: Advisory lock keys of every series the batch writes, ascending.
    locks: list[int]

    @classmethod
    def prepare(
        cls,
        receipts: Sequence[DicomStoreMeta],
        states: Sequence[DicomStateMeta],
        images: Sequence[DicomImageMeta],
    ) -> _Batch:
        # Merge first (states repeat per instance), then clean what is left;
        # removing a NUL can make two keys equal, so merge again if it did.
        merged_receipts = _merge(RECEIPTS, receipts)
        merged_states = _merge_states(states)
        merged_images = _merge(IMAGES, images)
        if (cleaned_r := _strip_nul(merged_receipts)) is not merged_receipts:
            merged_receipts = _merge(RECEIPTS, cleaned_r)
        if (cleaned_s := _strip_nul(merged_states)) is not merged_states:
            merged_states = _merge_states(cleaned_s)
        if (cleaned_i := _strip_nul(merged_images)) is not merged_images:
            merged_images = _merge(IMAGES, cleaned_i)
        series_of = attrgetter(*SERIES_KEY)
        touched: set[tuple[str, str, str]] = {series_of(s) for s in merged_states}
        touched.update(series_of(i) for i in merged_images)
        locked = touched | {series_of(r) for r in merged_receipts}
        return cls(
            receipts=merged_receipts,
            states=merged_states,
            images=merged_images,
            series=sorted(touched),
            locks=sorted({series_lock_key(*s) for s in locked}),
        )

    @property
    def empty(self) -> bool:
        return not (self.receipts or self.states or self.images)


# --------------------------------------------------------------------------- per-connection state

_INT4_OID = 23
_INT8_OID = 20
_INT4_RANGE = range(-(2**31), 2**31)

_COLUMN_TYPES = (
    "SELECT attname::text, atttypid::integer FROM pg_attribute "
    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)


@dataclass(frozen=True)
class _Session:
    """What one connection prepared once: temp tables, COPY types, rendered SQL.

    ``types`` are the temp tables' column type OIDs in the model's field
    order, read from the catalog, so binary COPY always sends what the server
    expects. ``int4`` are the astuple() positions of the target's integer
    columns, to name the record when one of them is out of range.
    """

    types: dict[str, list[int]]
    int4: dict[str, tuple[int, ...]]
    copy: dict[str, bytes]
    upsert: dict[str, bytes]
    lock: bytes
    recount: bytes
    read: bytes


def _column_types(conn: psycopg.Connection[Any], relation: str) -> dict[str, int]:
    return {str(name): int(oid) for name, oid in conn.execute(_COLUMN_TYPES, (relation,)).fetchall()}


def _prepare_session(conn: psycopg.Connection[Any]) -> _Session:
    """Create the temp tables and read their types; once per connection.

    Raises:
        StoreError: a table lacks a column the models have (the database's
            schema is older than this code: run ``dicomflow db migrate``).
        psycopg.errors.UndefinedTable: the schema is missing altogether.
    """
    types: dict[str, list[int]] = {}
    int4: dict[str, tuple[int, ...]] = {}
    copy: dict[str, bytes] = {}
    upsert: dict[str, bytes] = {}
    with conn.transaction():
        for table in _ALL:
            conn.execute(table.create_temp())
            target = _column_types(conn, table.name)
            missing = [c for c in table.columns if c not in target]
            if missing:
                raise StoreError(
                    f"table {table.name} has no column {', '.join(missing)}: the database schema is older "
                    "than this dicomflow; run `dicomflow db migrate`"
                )
            temp = _column_types(conn, table.temp)
            for column in table.columns:
                if target[column] == _INT4_OID and temp[column] != _INT8_OID:
                    conn.execute(table.widen(column))
            temp = _column_types(conn, table.temp)
            types[table.name] = [temp[c] for c in table.columns]
            int4[table.name] = tuple(i for i, c in enumerate(table.columns) if target[c] == _INT4_OID)
            copy[table.name] = table.copy().as_bytes(conn)
            upsert[table.name] = table.upsert().as_bytes(conn)
    return _Session(
        types=types,
        int4=int4,
        copy=copy,
        upsert=upsert,
        lock=_LOCK_SERIES.as_bytes(conn),
        recount=_RECOUNT.as_bytes(conn),
        read=_READ_STATES.as_bytes(conn),
    )


def _int4_culprit(records: Sequence[R], positions: tuple[int, ...]) -> R | None:
    """The first record with an integer field outside PostgreSQL's integer range."""
    astuple = msgspec.structs.astuple
    for record in records:
        values = astuple(record)
        for i in positions:
            value = values[i]
            if value is not None and value not in _INT4_RANGE:
                return record
    return None


# --------------------------------------------------------------------------- the store


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
        self._db = db
        self._max_attempts = max_attempts
        self._conn: psycopg.Connection[Any] | None = None
        self._session: _Session | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public API

    def migrate(self) -> list[str]:
        """Apply pending schema migrations; returns the versions applied now.

        Raises:
            StoreError: cannot connect, or a migration failed (rolled back;
                earlier versions stay applied).
        """
        with self._lock:
            applied = self._run("migrate", migrations.migrate)
            if applied:
                # The temporary tables and prepared statements of this
                # session were shaped like the old tables: start afresh.
                self._discard()
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
        batch = _Batch.prepare(receipts, states, images)
        if batch.empty:
            return []
        with self._lock:
            started = time.perf_counter()
            result = self._run("write batch", lambda conn: self._write(conn, batch))
            log.debug(
                "wrote %s receipts, %s states, %s images (%s series) in %.1f ms",
                len(batch.receipts), len(batch.states), len(batch.images), len(batch.series),
                (time.perf_counter() - started) * 1000,
            )
            return result

    def status(self, *, exact: bool = True) -> StoreStatus:
        """Applied and pending migrations, and row counts (exact or estimated).

        Raises:
            StoreError: cannot connect or query.
        """
        with self._lock:
            return self._run("status", lambda conn: self._status(conn, exact))

    def backend_pid(self) -> int | None:
        """PID of the server process behind the current connection (None before the first call)."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return conn.info.backend_pid

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the database, for messages (never the password)."""
        try:
            params = conninfo_to_dict(self._db.conninfo())
        except psycopg.ProgrammingError:
            return "<invalid dsn>"
        return f"{params.get('host', '')}:{params.get('port', '')}/{params.get('dbname', '')}"

    def close(self) -> None:
        """Close the connection; the store may still be used again (it reconnects)."""
        with self._lock:
            self._discard()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ connection and retries

    def _connect(self) -> psycopg.Connection[Any]:
        """The reused connection, opened when missing or broken.

        Raises:
            StoreError: the server cannot be reached or refuses us.
        """
        conn = self._conn
        if conn is not None and (
            conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        ):
            # Broken, or left inside a transaction by an interrupted call.
            self._discard()
            conn = None
        if conn is None:
            try:
                conn = psycopg.connect(self._db.conninfo(), autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {self.where}: {exc}") from exc
            self._conn = conn
            self._session = None
            log.debug("connected to PostgreSQL at %s, backend %s", self.where, conn.info.backend_pid)
        return conn

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        self._session = None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:  # already gone: nothing left to release
                pass

    def _run(self, what: str, op: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``op`` (one transaction or read) with the store's retry policy.

        - deadlock / serialization failure: retried up to ``max_attempts``
          with jittered backoff (the transaction was rolled back);
        - connection lost on a connection reused from an earlier call: one
          retry on a new connection (a restarted server or an idle backend
          that was terminated is only noticed on use);
        - a refused value: :class:`StoreDataError`; retried once on a new
          session if the session was prepared by an earlier call, because
          the tables may have been migrated since (by another process) and
          the temp tables still have the old column types;
        - anything else: :class:`StoreError`.
        """
        attempt = 0
        reconnected = False
        refreshed = False
        while True:
            attempt += 1
            reused = self._conn is not None and not (self._conn.closed or self._conn.broken)
            conn = self._connect()
            stale = self._session is not None
            try:
                return op(conn)
            except StoreDataError as exc:
                self._after_error(conn)
                if stale and not refreshed:
                    refreshed = True
                    log.info("%s: %s; retrying once on a new session in case the schema changed", what, exc)
                    self._discard()
                    continue
                raise
            except pg_errors.TransactionRollback as exc:  # 40001, 40P01 ...
                self._after_error(conn)
                if attempt >= self._max_attempts:
                    raise StoreError(f"{what} failed after {attempt} attempts: {_first_line(exc)}") from exc
                delay = min(0.5, 0.02 * 2**attempt) * random.uniform(0.5, 1.5)
                log.warning("%s: %s (%s), retrying in %.0f ms", what, type(exc).__name__, exc.sqlstate, delay * 1000)
                time.sleep(delay)
            except StoreError:  # StoreDataError, or a schema older than the models
                self._after_error(conn)
                raise
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                self._after_error(conn)
                raise StoreDataError(
                    f"{what}: PostgreSQL refused a value: {_first_line(exc)}", sqlstate=exc.sqlstate
                ) from exc
            except psycopg.OperationalError as exc:
                lost = conn.closed or conn.broken
                self._after_error(conn)
                if lost and reused and not reconnected:
                    reconnected = True
                    log.warning("%s: connection to %s lost (%s); reconnecting", what, self.where, _first_line(exc))
                    continue
                raise StoreError(f"{what} at {self.where} failed: {_first_line(exc)}") from exc
            except pg_errors.UndefinedTable as exc:
                self._after_error(conn)
                raise StoreError(f"{what}: the schema is missing ({_first_line(exc)}); run `dicomflow db migrate`") from exc
            except psycopg.Error as exc:
                self._after_error(conn)
                raise StoreError(f"{what} at {self.where} failed: {_first_line(exc)}") from exc

    def _after_error(self, conn: psycopg.Connection[Any]) -> None:
        """Drop a connection that is broken or left inside a transaction."""
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._discard()

    # ------------------------------------------------------------------ the batch transaction

    def _write(self, conn: psycopg.Connection[Any], batch: _Batch) -> list[DicomStateMeta]:
        session = self._session
        if session is None:
            session = self._session = _prepare_session(conn)
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(session.lock, (batch.locks,))
            self._upsert(cur, session, RECEIPTS, batch.receipts)
            self._upsert(cur, session, IMAGES, batch.images)
            self._upsert(cur, session, STATES, batch.states)
            if not batch.series:
                return []
            columns = [list(c) for c in zip(*batch.series, strict=True)]
            cur.execute(session.recount, columns)
            with conn.cursor(row_factory=kwargs_row(DicomStateMeta)) as reader:
                rows = reader.execute(session.read, columns).fetchall()
        rows.sort(key=STATES.key_of())
        return rows

    def _upsert(self, cur: psycopg.Cursor[Any], session: _Session, table: _Table[R], records: list[R]) -> None:
        """Binary COPY ``records`` (sorted, unique keys) into the temp table, then upsert them.

        Raises:
            StoreDataError: naming the record when the encoder or PostgreSQL
                says which one it was.
        """
        if not records:
            return
        astuple = msgspec.structs.astuple
        index = 0
        try:
            with cur.copy(session.copy[table.name]) as copy:
                copy.set_types(session.types[table.name])
                write_row = copy.write_row
                for index, record in enumerate(records):
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
            culprit = _copy_culprit(exc, records) if exc.sqlstate else records[index]
            raise StoreDataError(
                f"{table.name}: PostgreSQL refused a value: {_first_line(exc)}",
                table=table.name, record=culprit, sqlstate=exc.sqlstate,
            ) from exc
        try:
            cur.execute(session.upsert[table.name])
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            culprit = None
            if isinstance(exc, pg_errors.NumericValueOutOfRange):
                culprit = _int4_culprit(records, session.int4[table.name])
            raise StoreDataError(
                f"{table.name}: PostgreSQL refused a row: {_first_line(exc)}",
                table=table.name, record=culprit, sqlstate=exc.sqlstate,
            ) from exc

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
                found = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
                counts[table] = int(found[0]) if found else 0
            else:
                found = conn.execute(
                    "SELECT n_live_tup FROM pg_stat_user_tables WHERE relid = to_regclass(%s)", (table,)
                ).fetchone()
                counts[table] = int(found[0]) if found else 0
        return StoreStatus(applied=applied, pending=pending, counts=counts, exact=exact)


def _first_line(exc: BaseException) -> str:
    """The primary message only: a COPY error's CONTEXT quotes the refused value (maybe a patient name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _copy_culprit(exc: psycopg.Error, records: Sequence[R]) -> R | None:
    """The record on the COPY line PostgreSQL named ("COPY t, line 17, column x"), if any."""
    context = exc.diag.context or ""
    marker = ", line "
    start = context.find(marker)
    if start < 0:
        return None
    digits = ""
    for ch in context[start + len(marker):]:
        if not ch.isdigit():
            break
        digits += ch
    line = int(digits) if digits else 0
    return records[line - 1] if 1 <= line <= len(records) else None


__all__ = ["TABLES", "PgStore", "StoreDataError", "StoreError", "StoreStatus", "series_lock_key"]
