"""What one PostgreSQL connection prepares once: temp tables, COPY column types, rendered SQL.

The store's batch transaction COPYs rows in binary into session temporary
tables shaped like the targets; binary COPY needs the exact column types, so
they are read from the catalog when a connection is first used (and again
after a migration). Also here: naming the record behind a refused value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
import psycopg

from dicomflow.errors import StoreError
from dicomflow.store import changes
from dicomflow.store.sql import ALL_TABLES, IMAGES, LOCK_SERIES, READ_STATES, RECOUNT

R = TypeVar("R", bound=msgspec.Struct)

_INT4_OID = 23
_INT8_OID = 20
_INT4_RANGE = range(-(2**31), 2**31)

_COLUMN_TYPES = (
    "SELECT attname::text, atttypid::integer FROM pg_attribute "
    "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)


@dataclass(frozen=True)
class Session:
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
    #: The change log's lock and its one INSERT per batch (:mod:`dicomflow.store.changes`).
    change_lock: bytes
    record_changes: bytes


def _column_types(conn: psycopg.Connection[Any], relation: str) -> dict[str, int]:
    return {str(name): int(oid) for name, oid in conn.execute(_COLUMN_TYPES, (relation,)).fetchall()}


def prepare_session(conn: psycopg.Connection[Any]) -> Session:
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
        for table in ALL_TABLES:
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
            # The instance upsert also collects what it created or changed, for the change log.
            statement = changes.recording_upsert() if table is IMAGES else table.upsert()
            upsert[table.name] = statement.as_bytes(conn)
        conn.execute(changes.CREATE_CHANGES_TEMP)
    return Session(
        types=types,
        int4=int4,
        copy=copy,
        upsert=upsert,
        lock=LOCK_SERIES.as_bytes(conn),
        recount=RECOUNT.as_bytes(conn),
        read=READ_STATES.as_bytes(conn),
        change_lock=changes.LOCK_CHANGE_LOG.as_bytes(conn),
        record_changes=changes.RECORD.as_bytes(conn),
    )


def int4_culprit(records: Sequence[R], positions: tuple[int, ...]) -> R | None:
    """The first record with an integer field outside PostgreSQL's integer range."""
    astuple = msgspec.structs.astuple
    for record in records:
        values = astuple(record)
        for i in positions:
            value = values[i]
            if value is not None and value not in _INT4_RANGE:
                return record
    return None


def copy_culprit(exc: psycopg.Error, records: Sequence[R]) -> R | None:
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



__all__ = ["Session", "copy_culprit", "int4_culprit", "prepare_session"]
