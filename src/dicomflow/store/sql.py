"""SQL of the PostgreSQL store, composed with :mod:`psycopg.sql`: identifiers quoted, values bound.

Each table dicomflow writes is described once (:class:`Table`: columns from
the model, primary key, conflict rules); the statements of a batch
transaction (temp table, binary COPY, upsert, series locks, recount, read
back) are built from that description. No statement here holds a value:
every value is a bound parameter (``%s`` / :class:`~psycopg.sql.Placeholder`)
or COPY data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, TypeVar

import msgspec
from psycopg import sql

from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta

R = TypeVar("R", bound=msgspec.Struct)

SERIES_KEY: tuple[str, str, str] = ("tenant_id", "study_uid", "series_uid")

#: Tables dicomflow writes, for ``db status``.
TABLES: tuple[str, ...] = ("dicom_object_meta", "dicom_state_meta", "dicom_image_meta")


@dataclass(frozen=True)
class Table(Generic[R]):
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

    def column_list(self, prefix: str | None = None) -> sql.Composed:
        if prefix is None:
            return sql.SQL(", ").join(sql.Identifier(c) for c in self.columns)
        return sql.SQL(", ").join(sql.Identifier(prefix, c) for c in self.columns)

    def key_list(self) -> sql.Composed:
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
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(sql.Identifier(self.temp), self.column_list())

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
            cols=self.column_list(),
            temp=sql.Identifier(self.temp),
            key=self.key_list(),
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


RECEIPTS: Table[DicomStoreMeta] = Table("dicom_object_meta", DicomStoreMeta, key=("trace_id",))
STATES: Table[DicomStateMeta] = Table(
    "dicom_state_meta", DicomStateMeta, key=SERIES_KEY,
    keep=("created_time",), newest=("updated_time",), skip=("series_related_instances",),
)
IMAGES: Table[DicomImageMeta] = Table(
    "dicom_image_meta", DicomImageMeta, key=(*SERIES_KEY, "sop_uid"),
    keep=("created_time",), newest=("updated_time",),
)


#: Every table a batch writes, in the order their temp tables are prepared.
ALL_TABLES: tuple[Table[Any], ...] = (RECEIPTS, STATES, IMAGES)

#: One transaction advisory lock per key of a ``bigint[]`` parameter.
LOCK_SERIES = sql.SQL("SELECT pg_advisory_xact_lock(k) FROM unnest({}::bigint[]) AS k").format(sql.Placeholder())

SERIES_ARRAYS = sql.SQL("unnest({}::text[], {}::text[], {}::text[]) AS k (tenant_id, study_uid, series_uid)").format(
    sql.Placeholder(), sql.Placeholder(), sql.Placeholder()
)

RECOUNT = sql.SQL(
    "UPDATE dicom_state_meta AS s SET series_related_instances = c.n "
    "FROM (SELECT k.tenant_id, k.study_uid, k.series_uid, "
    "(SELECT count(*)::integer FROM dicom_image_meta AS i "
    "WHERE i.tenant_id = k.tenant_id AND i.study_uid = k.study_uid AND i.series_uid = k.series_uid) AS n "
    "FROM {series}) AS c "
    "WHERE s.tenant_id = c.tenant_id AND s.study_uid = c.study_uid AND s.series_uid = c.series_uid "
    "AND s.series_related_instances IS DISTINCT FROM c.n"
).format(series=SERIES_ARRAYS)

READ_STATES = sql.SQL("SELECT {} FROM dicom_state_meta AS s JOIN {} USING (tenant_id, study_uid, series_uid)").format(
    STATES.column_list("s"), SERIES_ARRAYS
)


def count_rows(table: str) -> sql.Composed:
    """``SELECT count(*)`` of one table (``db status``), the name quoted as an identifier."""
    return sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))


__all__ = [
    "ALL_TABLES", "IMAGES", "LOCK_SERIES", "READ_STATES", "RECEIPTS", "RECOUNT", "SERIES_ARRAYS", "SERIES_KEY",
    "STATES", "TABLES", "Table", "count_rows",
]
