"""The DuckDB warehouse file: one writer, the exactly-once write, and readers.

DuckDB allows one process to open a file for writing and then no other
process may open it at all, not even read-only. So:

- :func:`open_writer` opens the file for the sink, creating the schema; a
  second writer gets :class:`WarehouseLockedError` naming the file and the
  process holding it;
- :func:`write_batch` writes one batch's rows *and* the offsets they came
  from in one transaction: a crash before the commit loses both, after it
  keeps both, so a restart that seeks to the stored offsets writes every
  row exactly once;
- readers (``dicomflow report``, a user's DuckDB or BI session) open the
  periodic snapshot file (:mod:`.snapshot`) while the sink runs:
  :func:`open_for_reading` picks the live file when no writer holds it,
  else the latest snapshot.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from dicomflow.settings import Settings, WarehouseSettings
from dicomflow.warehouse.ddl import WarehouseError
from dicomflow.warehouse.ddl_duckdb import OFFSETS_TABLE, quote, statements
from dicomflow.warehouse.schema import Table

log = logging.getLogger(__name__)

TP = tuple[str, int]

#: DuckDB reports a held lock only as an IOException with this text (no error code).
_LOCK_RE = re.compile(r"Could not set lock on file .*?Conflicting lock is held in (?P<who>.*?) \(PID (?P<pid>\d+)\)", re.S)


class WarehouseLockedError(WarehouseError):
    """Another process has the warehouse file open for writing."""

    def __init__(self, path: Path, holder: str | None, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        who = f"process {pid} ({holder})" if pid is not None else "another process"
        super().__init__(
            f"warehouse file {path} is already open for writing by {who}: only one `dicomflow warehouse run` "
            "(or other DuckDB writer) may use a file; stop it or set [warehouse] path to another file"
        )


def _translate(exc: duckdb.Error, path: Path) -> WarehouseError:
    m = _LOCK_RE.search(str(exc))
    if m is not None:
        return WarehouseLockedError(path, m.group("who"), int(m.group("pid")))
    return WarehouseError(f"cannot open warehouse file {path}: {exc}")


def connect(path: Path, *, read_only: bool = False, threads: int = 0) -> duckdb.DuckDBPyConnection:
    """Open ``path`` with DuckDB, translating its lock error.

    Raises:
        WarehouseLockedError: a writer holds the file.
        WarehouseError: any other reason it cannot be opened, naming the file.
    """
    config: dict[str, str | bool | int | float | list[str]] = {}
    if threads:
        config["threads"] = threads
    try:
        return duckdb.connect(str(path), read_only=read_only, config=config)
    except duckdb.Error as exc:
        raise _translate(exc, path) from exc


def open_writer(settings: WarehouseSettings) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the warehouse file for the sink, with its schema.

    Raises:
        WarehouseLockedError: another writer holds the file (named in the message).
        WarehouseError: the file cannot be opened or created.
    """
    path = settings.path
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(path, threads=settings.threads)
    # Row order inside a table carries no meaning here; not preserving it lets inserts run in parallel.
    con.execute("SET preserve_insertion_order = false")
    for stmt in statements():
        con.execute(stmt)
    return con


def stored_offsets(con: duckdb.DuckDBPyConnection) -> dict[TP, int]:
    """The next offset to read per (topic, partition), as committed with the rows."""
    rows = con.execute(f'SELECT topic, "partition", next_offset FROM {OFFSETS_TABLE}').fetchall()
    return {(str(t), int(p)): int(o) for t, p, o in rows}


@dataclass
class TableBatch:
    """One table's rows of a batch, as an Arrow table (column ``_seq`` = position in the batch)."""

    table: Table
    rows: pa.Table


@dataclass
class WriteResult:
    """Rows inserted or updated per table by one transaction."""

    rows: dict[str, int] = field(default_factory=dict)


def _deduplicated(t: Table, view: str) -> str:
    """The batch's rows with one row per key: the first (append) or the highest version, later wins a tie (latest)."""
    keys = ", ".join(quote(k) for k in t.key)
    if t.kind == "append":
        order = f"{keys}, _seq"
    else:
        assert t.version_column is not None
        order = f"{keys}, {quote(t.version_column)} DESC, _seq DESC"
    return f"(SELECT DISTINCT ON ({keys}) * FROM {view} ORDER BY {order})"


def unique_keys(t: Table, rows: pa.Table) -> bool:
    """Whether no key occurs twice in ``rows``: then the batch needs no deduplication.

    Checks the key's last column only (a receipt's trace_id, a series' or an
    instance's UID): when it is unique so is the whole key, and one hashed
    column costs a fraction of the sort that deduplication is (which doubled
    the write time). A batch where it repeats is deduplicated in full.
    """
    return bool(pc.count_distinct(rows.column(t.key[-1]), mode="all").as_py() == rows.num_rows)


def insert_sql(t: Table, view: str, *, deduplicate: bool = True) -> str:
    """Plain INSERT of the (deduplicated) batch: fails on a key already stored (the fast, common path)."""
    cols = ", ".join(quote(c) for c in t.stored_column_names)
    source = _deduplicated(t, view) if deduplicate else view
    return f"INSERT INTO {quote(t.name)} ({cols}) SELECT {cols} FROM {source}"


def upsert_sql(t: Table, view: str, *, deduplicate: bool = True) -> str:
    """INSERT ... ON CONFLICT for a batch with keys already stored.

    append tables keep the stored row (first occurrence wins); latest tables
    replace it when the incoming version is not older (Doris UNIQUE KEY with a
    sequence column, ClickHouse ReplacingMergeTree(updated_time)), so an older
    version arriving late changes nothing.
    """
    target = quote(t.name)
    base = insert_sql(t, view, deduplicate=deduplicate)
    if t.kind == "append":
        return base + " ON CONFLICT DO NOTHING"
    assert t.version_column is not None
    version = quote(t.version_column)
    keys = ", ".join(quote(k) for k in t.key)
    updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in t.stored_column_names if c not in t.key)
    return f"{base} ON CONFLICT ({keys}) DO UPDATE SET {updates} WHERE excluded.{version} >= {target}.{version}"


def write_batch(con: duckdb.DuckDBPyConnection, batches: list[TableBatch], offsets: Mapping[TP, int]) -> WriteResult:
    """Write every table's rows and the batch's next offsets in ONE transaction.

    ``offsets`` are the next offsets to read (last consumed + 1) of every
    partition the batch touched, dead letters included.

    Why two paths: DuckDB's ``ON CONFLICT`` is several times slower than a
    plain INSERT, and nearly every batch holds only new keys. The batch is
    first written with plain INSERTs; if a key is already stored (a
    re-published event, a newer version) the transaction fails on the primary
    key, is rolled back, and the batch is written again with the upserts.

    Raises:
        duckdb.Error: the transaction was rolled back; nothing of the batch is stored.
    """
    try:
        return _transaction(con, batches, offsets, upsert=False)
    except duckdb.ConstraintException:
        log.debug("batch has keys already stored: writing it again with upserts")
        return _transaction(con, batches, offsets, upsert=True)


def _transaction(
    con: duckdb.DuckDBPyConnection, batches: list[TableBatch], offsets: Mapping[TP, int], *, upsert: bool
) -> WriteResult:
    result = WriteResult()
    views: list[str] = []
    con.execute("BEGIN TRANSACTION")
    try:
        for i, b in enumerate(batches):
            if b.rows.num_rows == 0:
                continue
            view = f"_batch_{i}"
            con.register(view, b.rows)
            views.append(view)
            dedup = not unique_keys(b.table, b.rows)
            sql = upsert_sql(b.table, view, deduplicate=dedup) if upsert else insert_sql(b.table, view, deduplicate=dedup)
            changed = con.execute(sql).fetchone()
            result.rows[b.table.name] = int(changed[0]) if changed else 0
        if offsets:
            off = pa.table(
                {
                    "topic": pa.array([t for t, _ in offsets], pa.string()),
                    "partition": pa.array([p for _, p in offsets], pa.int32()),
                    "next_offset": pa.array(list(offsets.values()), pa.int64()),
                }
            )
            con.register("_batch_offsets", off)
            views.append("_batch_offsets")
            con.execute(
                f"INSERT INTO {OFFSETS_TABLE} SELECT topic, \"partition\", next_offset FROM _batch_offsets "
                "ON CONFLICT (topic, \"partition\") DO UPDATE SET next_offset = excluded.next_offset"
            )
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass
        raise
    finally:
        for view in views:
            try:
                con.unregister(view)
            except duckdb.Error:
                log.debug("unregistering %s failed", view)
    return result


def open_for_reading(settings: Settings) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the warehouse: the live file if no writer holds it, else the latest snapshot.

    The snapshot is at most ``[warehouse] snapshot_interval_s`` (plus one
    snapshot's duration) behind the live file.

    Raises:
        WarehouseError: neither the live file nor a snapshot can be opened
            (naming both paths and why).
    """
    w = settings.warehouse
    live_problem: str
    if w.path.exists():
        try:
            return connect(w.path, read_only=True)
        except WarehouseLockedError as exc:
            live_problem = f"{w.path} is being written by process {exc.pid}"
        except WarehouseError as exc:
            live_problem = str(exc)
    else:
        live_problem = f"{w.path} does not exist"
    snap = w.snapshot_file()
    if snap.exists():
        try:
            return connect(snap, read_only=True)
        except WarehouseError as exc:
            raise WarehouseError(f"cannot read the warehouse: {live_problem}, and its snapshot failed: {exc}") from exc
    raise WarehouseError(
        f"cannot read the warehouse: {live_problem}, and no snapshot exists yet at {snap} "
        f"(the sink writes one every {w.snapshot_interval_s:g} s when [warehouse] snapshot_interval_s > 0)"
    )


__all__ = [
    "TableBatch",
    "WarehouseLockedError",
    "WriteResult",
    "connect",
    "open_for_reading",
    "open_writer",
    "stored_offsets",
    "unique_keys",
    "write_batch",
]
