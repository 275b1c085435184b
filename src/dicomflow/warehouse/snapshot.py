"""Periodic read-only snapshots of the warehouse, for readers while the sink writes.

Why snapshots: a DuckDB file open for writing cannot be opened by any other
process, not even read-only. Every ``[warehouse] snapshot_interval_s`` seconds
(only when something was written since the last one) the sink copies its
database into ``<name>.snapshot.duckdb.tmp`` (``ATTACH`` and one ``CREATE
TABLE ... AS SELECT`` per table, in one transaction), then renames it over ``<name>.snapshot.duckdb`` (atomic on POSIX).
Readers open the snapshot read-only; one that still has the previous snapshot
open keeps reading that file's data until it reconnects.

The snapshot has the data without the primary-key indexes: readers do not
need them, and leaving them out makes a snapshot about 2.5x faster and 3x
smaller than ``COPY FROM DATABASE`` (which rebuilds every index): measured
2.2 s vs 5.5 s and 46 MB vs 150 MB for 1,000,000 instance rows.

The copy runs in a background thread on its own cursor of the sink's
connection: DuckDB's MVCC gives it one consistent transaction (every table as
of the same commit, offsets included) while the sink goes on writing.
A failed snapshot is logged and retried at the next interval (an observer:
it never stops the sink).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from dicomflow.warehouse.ddl_duckdb import OFFSETS_TABLE, quote
from dicomflow.warehouse.schema import TABLES

log = logging.getLogger(__name__)

#: Table in each snapshot saying when it was taken.
SNAPSHOT_INFO_TABLE = "_snapshot"


def _remove(path: Path) -> None:
    for p in (path, path.with_name(path.name + ".wal")):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def write_snapshot(con: duckdb.DuckDBPyConnection, target: Path) -> float:
    """Copy the database of ``con`` into ``target`` atomically; returns the seconds it took.

    Raises:
        duckdb.Error: the copy failed; ``target`` is left as it was.
        OSError: the rename failed.
    """
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    _remove(tmp)
    cur = con.cursor()
    try:
        row = cur.execute("SELECT current_database()").fetchone()
        assert row is not None
        source = str(row[0])
        cur.execute("ATTACH ? AS _snapshot_db", [str(tmp)])
        try:
            # One transaction: every table as of the same commit (offsets included).
            cur.execute("BEGIN TRANSACTION")
            for name in (*(t.name for t in TABLES), OFFSETS_TABLE):
                cur.execute(f"CREATE TABLE _snapshot_db.{quote(name)} AS SELECT * FROM {quote(source)}.{quote(name)}")
            cur.execute(
                f"CREATE TABLE _snapshot_db.{SNAPSHOT_INFO_TABLE} AS "
                "SELECT CAST(? AS TIMESTAMP) AS taken_at, CAST(? AS VARCHAR) AS source",
                [dt.datetime.now().isoformat(sep=" ", timespec="microseconds"), str(row[0])],
            )
            cur.execute("COMMIT")
        finally:
            cur.execute("DETACH _snapshot_db")
    except BaseException:
        _remove(tmp)
        raise
    finally:
        cur.close()
    os.replace(tmp, target)
    return time.perf_counter() - started


class Snapshotter:
    """Takes a snapshot at most every ``interval_s``, in a background thread, when data changed.

    ``on_done(seconds)`` is told each snapshot's duration (for metrics).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        target: Path,
        interval_s: float,
        on_done: Callable[[float], None] | None = None,
    ) -> None:
        self.con = con
        self.target = target
        self.interval_s = interval_s
        self.on_done = on_done
        self.taken = 0
        self.failed = 0
        self.last_seconds: float | None = None
        self._thread: threading.Thread | None = None
        self._last_started = time.monotonic()
        self._snapped_generation = -1

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    def _busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def maybe_start(self, generation: int) -> bool:
        """Start a snapshot if the interval passed, none is running and ``generation`` changed."""
        if not self.enabled or self._busy() or generation == self._snapped_generation:
            return False
        if time.monotonic() - self._last_started < self.interval_s:
            return False
        self._start(generation)
        return True

    def _start(self, generation: int) -> None:
        self._last_started = time.monotonic()
        self._snapped_generation = generation
        self._thread = threading.Thread(target=self._run, name="warehouse-snapshot", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            seconds = write_snapshot(self.con, self.target)
        except (duckdb.Error, OSError) as exc:
            self.failed += 1
            self._snapped_generation = -1
            log.warning("warehouse snapshot %s failed (retried at the next interval): %s", self.target, exc)
            return
        self.taken += 1
        self.last_seconds = seconds
        log.info("warehouse snapshot %s written in %.2f s", self.target, seconds)
        if self.on_done is not None:
            try:
                self.on_done(seconds)
            except Exception:  # an observer must not break the snapshot thread
                log.exception("snapshot observer failed")

    def wait(self) -> None:
        """Wait for a running snapshot to finish."""
        if self._thread is not None:
            self._thread.join()

    def final(self, generation: int) -> None:
        """At shutdown: wait for a running one, then take one more if anything changed since."""
        self.wait()
        if self.enabled and generation != self._snapped_generation:
            self._start(generation)
            self.wait()


__all__ = ["SNAPSHOT_INFO_TABLE", "Snapshotter", "write_snapshot"]
