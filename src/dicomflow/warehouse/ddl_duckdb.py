"""DuckDB DDL generated from :mod:`dicomflow.warehouse.schema`: the sink's own tables.

``dicomflow warehouse ddl --target duckdb`` prints it for users who create the
warehouse themselves; the sink runs the same statements (``IF NOT EXISTS``) when
it opens its file, so the two cannot drift.

Every table has a PRIMARY KEY on its schema key: the sink's bulk upsert
(``INSERT ... ON CONFLICT``) relies on it for deduplication (receipts, audit
events) and for "latest version wins" (series states, instances). String byte
limits are not enforced by DuckDB (``VARCHAR`` is unbounded); the wire model
already truncates on a character boundary when it decodes.
"""

from __future__ import annotations

from dicomflow.warehouse.schema import TABLES, Column, Table, WireType

#: DuckDB type of each wire type. TIMESTAMP keeps microseconds (the wire
#: datetimes' fractional seconds, as far as Python's datetime carries them).
DUCKDB_TYPES: dict[WireType, str] = {
    "str": "VARCHAR",
    "date": "DATE",
    "time": "TIME",
    "datetime": "TIMESTAMP",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float": "DOUBLE",
    "bool": "BOOLEAN",
    "json": "JSON",
}

#: The sink's offsets table: the next offset to read per partition, written in the
#: same transaction as the rows those offsets produced (exactly once).
OFFSETS_TABLE = "_offsets"
OFFSETS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (\n"
    "    topic VARCHAR NOT NULL,\n"
    "    \"partition\" INTEGER NOT NULL,\n"
    "    next_offset BIGINT NOT NULL,\n"
    "    PRIMARY KEY (topic, \"partition\")\n"
    ");"
)


def quote(name: str) -> str:
    """A DuckDB identifier, always quoted (``columns`` and ``partition`` are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def column_type(column: Column) -> str:
    """DuckDB type of ``column``."""
    return DUCKDB_TYPES[column.wire_type]


def table_ddl(t: Table) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for one table."""
    lines = []
    for c in t.columns:
        null = "" if c.nullable else " NOT NULL"
        comment = f"  -- at most {c.max_bytes} bytes" if c.max_bytes else ""
        lines.append(f"    {quote(c.name)} {column_type(c)}{null},{comment}")
    for c in t.metadata:
        lines.append(f"    {quote(c.name)} {column_type(c)},  -- sink metadata, not a wire field")
    lines.append(f"    PRIMARY KEY ({', '.join(quote(k) for k in t.key)})")
    how = (
        f"latest version per key by {t.version_column}" if t.kind == "latest" else "append-only, deduplicated by key"
    )
    body = "\n".join(lines)
    return f"-- {t.name}: {how}\nCREATE TABLE IF NOT EXISTS {quote(t.name)} (\n{body}\n);"


def duckdb_ddl() -> str:
    """The whole DuckDB schema: the four tables and the offsets table."""
    parts = [table_ddl(t) for t in TABLES]
    parts.append("-- the sink's consumed offsets (exactly once: same transaction as the rows)\n" + OFFSETS_DDL)
    return "\n\n".join(parts) + "\n"


def metadata_migrations() -> list[str]:
    """Add the sink metadata columns to a file created before they existed (no-ops otherwise)."""
    return [
        f"ALTER TABLE {quote(t.name)} ADD COLUMN IF NOT EXISTS {quote(c.name)} {column_type(c)}"
        for t in TABLES for c in t.metadata
    ]


def statements() -> list[str]:
    """The DDL as separate statements, for ``execute`` one by one (the sink runs them when it opens its file)."""
    return [table_ddl(t) for t in TABLES] + [OFFSETS_DDL, *metadata_migrations()]


__all__ = [
    "DUCKDB_TYPES", "OFFSETS_DDL", "OFFSETS_TABLE", "column_type", "duckdb_ddl", "metadata_migrations", "quote",
    "statements", "table_ddl",
]
