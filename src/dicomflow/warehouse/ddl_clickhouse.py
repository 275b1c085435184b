"""ClickHouse DDL: per topic a Kafka-engine table, a materialized view and a target table.

Generated from :mod:`dicomflow.warehouse.schema` (so from the wire-format model):

- ``<table>_kafka``: a Kafka-engine table reading each message whole, as one
  ``raw String`` column;
- ``<table>``: the target, ``MergeTree`` for append tables (receipts, audit
  events), ``ReplacingMergeTree(updated_time)`` for latest-version tables
  (series states, instances), ordered by the table's key, partitioned by the
  month of ``study_date`` where the message carries one;
- ``<table>_mv``: the materialized view moving valid messages from the Kafka
  table into the target, extracting and parsing every field;
- ``<table>_rejected`` and ``<table>_rejected_mv``: every message that is not a
  JSON object or lacks a required field, kept whole with the reason. Nothing is
  skipped silently and one bad message never stops the consumer.

Why raw strings: a typed ``JSONEachRow`` Kafka table fails a whole block on one
bad message. Newer servers can skip such messages (``kafka_skip_broken_messages``,
also set here) but then they are gone without a trace; 18.x servers have no
such setting at all, and a block that fails to parse is dropped *with the good
messages read with it*. Reading raw text and validating in the view keeps every
message either in its table or in the rejected table.

Two syntaxes:

``current`` (``SETTINGS kafka_broker_list = ...``; servers of the last years):
messages read with ``JSONAsString``, fields with ``JSONExtract*``, datetimes
``DateTime64(6)`` via ``parseDateTime64BestEffortOrNull`` (the fraction is kept).

``legacy`` (positional ``Kafka(brokers, topics, group, format, delimiter, schema,
consumers)``; ClickHouse 18.x, such as Debian's 18.16 package): that server has
neither ``JSONAsString`` nor ``DateTime64`` nor ``kafka_skip_broken_messages``.
Each message is read as one ``TabSeparated`` line and fields with
``visitParamExtract*``. TSV reading undoes backslash escapes; the view doubles
backslashes back, which restores ``\\\\`` (the DICOM value separator in
``image_type`` ``ORIGINAL\\PRIMARY`` ...) but not an escaped double quote inside a
string, which ends that value early. Datetimes become ``DateTime`` (whole
seconds, in the server's time zone) plus a ``<name>_text`` column holding the
wire text with its fractional seconds; ``ReplacingMergeTree(updated_time)``
then orders versions to the second (equal versions: the last inserted wins).

Sink metadata (``instances.indexed_time``, not a wire field): ClickHouse reads
no Kafka timestamp in 18.x (the ``_timestamp`` virtual column came later), so
the view stamps ``now()`` when it inserts the block (``now64(6)`` in the
current syntax). That is when ClickHouse indexed the instance, up to a
Kafka-engine flush later than the consumer's commit; the report's latency
from ClickHouse measures that path. Like the wire datetimes (read in the
server's time zone), it assumes the server's time zone is the receivers'.

Audit events: nested parts stay JSON text columns; ``event_key`` is the md5 of
the message bytes as read (the DuckDB sink keys the canonical re-encoding; both
make a re-published event the same key).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from dicomflow.settings import Settings
from dicomflow.warehouse.schema import AUDIT_KEY_COLUMN, INDEXED_TIME_COLUMN, TABLES, Column, Table

#: Consumer group suffix per table (the reference's medical_object_group ...).
GROUP_SUFFIX: dict[str, str] = {
    "receipts": "object",
    "series_states": "state",
    "instances": "image",
    "audit_events": "audit",
}


def group_name(settings: Settings, table: Table) -> str:
    """The Kafka consumer group of ``table``'s Kafka-engine table."""
    return f"{settings.clickhouse.group_prefix}_{GROUP_SUFFIX[table.name]}_group"


def quote(value: str) -> str:
    """A ClickHouse string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class _Dialect:
    legacy: bool

    # ------------------------------------------------------------- raw message

    @property
    def doc(self) -> str:
        """The JSON text the field functions read."""
        # TSV reading turned every JSON "\\" into "\"; doubling restores it.
        return "replaceAll(raw, '\\\\', '\\\\\\\\')" if self.legacy else "raw"

    def is_object(self) -> str:
        return "substring(raw, 1, 1) = '{'" if self.legacy else "isValidJSON(raw)"

    def present(self, name: str) -> str:
        """The field exists and is not JSON null."""
        if self.legacy:
            return f"visitParamExtractRaw({self.doc}, {quote(name)}) NOT IN ('', 'null')"
        return f"JSONType(raw, {quote(name)}) NOT IN ('Null')"

    def has(self, name: str) -> str:
        if self.legacy:
            return f"visitParamHas({self.doc}, {quote(name)})"
        return f"JSONHas(raw, {quote(name)})"

    # ------------------------------------------------------------- one field

    def text(self, name: str) -> str:
        fn = "visitParamExtractString" if self.legacy else "JSONExtractString"
        return f"{fn}({self.doc}, {quote(name)})"

    def value(self, c: Column) -> str:
        """The non-null value of field ``c`` (undefined when absent; guarded by callers)."""
        d, n = self.doc, quote(c.name)
        w = c.wire_type
        if w in ("str", "time"):
            return self.text(c.name)
        if w == "json":
            return f"visitParamExtractRaw({d}, {n})" if self.legacy else f"JSONExtractRaw(raw, {n})"
        if w in ("int32", "int64"):
            bits = "32" if w == "int32" else "64"
            return f"toInt{bits}(visitParamExtractInt({d}, {n}))" if self.legacy else f"JSONExtract(raw, {n}, 'Int{bits}')"
        if w == "float":
            return f"visitParamExtractFloat({d}, {n})" if self.legacy else f"JSONExtract(raw, {n}, 'Float64')"
        if w == "bool":
            return f"toUInt8(visitParamExtractBool({d}, {n}))" if self.legacy else f"toUInt8(JSONExtractBool(raw, {n}))"
        if w == "date":
            return f"toDateOrNull({self.text(c.name)})"
        if w == "datetime":
            if self.legacy:
                return f"parseDateTimeBestEffortOrNull({self.text(c.name)})"
            return f"parseDateTime64BestEffortOrNull({self.text(c.name)}, 6)"
        raise ValueError(f"column {c.name}: no ClickHouse mapping for wire type {w}")

    def valid(self, c: Column) -> str:
        """True when a required field is present and parses."""
        checks = [self.present(c.name)]
        n = quote(c.name)
        raw_value = f"visitParamExtractRaw({self.doc}, {n})"
        if c.wire_type in ("str", "time", "date", "datetime"):
            checks.append(f"substring({raw_value}, 1, 1) = '\"'" if self.legacy else f"JSONType(raw, {n}) = 'String'")
        elif c.wire_type in ("int32", "int64"):
            checks.append(f"match({raw_value}, '^-?[0-9]+$')" if self.legacy else f"JSONType(raw, {n}) IN ('Int64', 'UInt64')")
        if c.wire_type in ("date", "datetime"):
            checks.append(f"isNotNull({self.value(c)})")
        return " AND ".join(checks)

    def select(self, c: Column) -> list[str]:
        """The view's expressions for column ``c`` (two for a legacy datetime)."""
        if c.name == AUDIT_KEY_COLUMN:
            return [f"lower(hex(MD5(raw))) AS {c.name}"]
        v = self.value(c)
        if c.nullable:
            expr = f"if({self.present(c.name)}, {v}, NULL)"
        elif c.wire_type in ("date", "datetime"):
            expr = f"assumeNotNull({v})"
        else:
            expr = v
        out = [f"{expr} AS {c.name}"]
        if self.legacy and c.wire_type == "datetime":
            text = self.text(c.name)
            out.append(f"{text} AS {c.name}_text" if not c.nullable else f"if({self.present(c.name)}, {text}, NULL) AS {c.name}_text")
        return out

    # ------------------------------------------------------------- types

    def column_type(self, c: Column) -> str:
        base = {
            "str": "String", "time": "String", "json": "String", "date": "Date",
            "datetime": "DateTime" if self.legacy else "DateTime64(6)",
            "int32": "Int32", "int64": "Int64", "float": "Float64", "bool": "UInt8",
        }[c.wire_type]
        return f"Nullable({base})" if c.nullable else base

    def columns(self, t: Table) -> list[str]:
        out: list[str] = []
        for c in t.columns:
            out.append(f"    {c.name} {self.column_type(c)}")
            if self.legacy and c.wire_type == "datetime":
                out.append(f"    {c.name}_text {'Nullable(String)' if c.nullable else 'String'}")
        for c in t.metadata:  # sink metadata: the view's insert time, always set (see the module docstring)
            out.append(f"    {c.name} {self.column_type(dataclasses.replace(c, nullable=False))}")
        return out

    def metadata_select(self, c: Column) -> str:
        """The view's expression for a sink metadata column: when ClickHouse inserted the row."""
        if c.name != INDEXED_TIME_COLUMN:
            raise ValueError(f"column {c.name}: no ClickHouse source for this sink metadata")
        return f"{'now()' if self.legacy else 'now64(6)'} AS {c.name}"


def _required(t: Table) -> list[Column]:
    return [c for c in t.columns if not c.nullable and c.name != AUDIT_KEY_COLUMN]


def _kafka_table(settings: Settings, t: Table, d: _Dialect, db: str) -> str:
    ch = settings.clickhouse
    brokers = ch.brokers or settings.kafka.brokers
    topic = getattr(settings.topics, t.topic_attr)
    group = group_name(settings, t)
    if d.legacy:
        engine = (
            f"Kafka({quote(brokers)}, {quote(topic)}, {quote(group)}, 'TabSeparated', '\\n', '', {ch.num_consumers})"
        )
    else:
        engine = (
            "Kafka\nSETTINGS\n"
            f"    kafka_broker_list = {quote(brokers)},\n"
            f"    kafka_topic_list = {quote(topic)},\n"
            f"    kafka_group_name = {quote(group)},\n"
            "    kafka_format = 'JSONAsString',\n"
            f"    kafka_num_consumers = {ch.num_consumers},\n"
            f"    kafka_skip_broken_messages = {ch.skip_broken_messages}"
        )
    return f"CREATE TABLE IF NOT EXISTS {db}.{t.name}_kafka (\n    raw String\n) ENGINE = {engine};\n"


def _target_table(t: Table, d: _Dialect, db: str) -> str:
    engine = "MergeTree()" if t.kind == "append" else f"ReplacingMergeTree({t.version_column})"
    lines = [f"CREATE TABLE IF NOT EXISTS {db}.{t.name} (", ",\n".join(d.columns(t)), f") ENGINE = {engine}"]
    if t.partition_column:
        lines.append(f"PARTITION BY toYYYYMM({t.partition_column})")
    lines.append(f"ORDER BY ({', '.join(t.key)});")
    return "\n".join(lines) + "\n"


def _views(t: Table, d: _Dialect, db: str) -> tuple[str, str, str]:
    required = _required(t)
    checks = [d.is_object()] + [d.valid(c) for c in required]
    valid = "\n    AND ".join(f"({c})" for c in checks)
    exprs = [e for c in t.columns for e in d.select(c)] + [d.metadata_select(c) for c in t.metadata]
    view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{t.name}_mv TO {db}.{t.name} AS\nSELECT\n    "
        + ",\n    ".join(exprs)
        + f"\nFROM {db}.{t.name}_kafka\nWHERE {valid};\n"
    )
    reasons = [f"NOT ({d.is_object()}), 'not a JSON object'"] + [
        f"NOT ({d.valid(c)}), {quote(f'{c.name}: missing, null or not a valid {c.wire_type}')}" for c in required
    ]
    rejected = (
        f"CREATE TABLE IF NOT EXISTS {db}.{t.name}_rejected (\n"
        "    received_at DateTime,\n    reason String,\n    raw String\n"
        ") ENGINE = MergeTree()\nPARTITION BY toYYYYMM(received_at)\nORDER BY received_at;\n"
    )
    rejected_view = (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{t.name}_rejected_mv TO {db}.{t.name}_rejected AS\n"
        "SELECT\n    now() AS received_at,\n    multiIf(" + ", ".join(reasons) + ", 'invalid') AS reason,\n    raw\n"
        f"FROM {db}.{t.name}_kafka\nWHERE NOT ({valid});\n"
    )
    return view, rejected, rejected_view


def table_statements(settings: Settings, legacy: bool = False) -> list[tuple[str, list[str]]]:
    """Per table: its name and its statements in creation order.

    Target and rejected tables come before the Kafka table, and the views
    last, so that no message is consumed before there is somewhere to put it.
    """
    d = _Dialect(legacy)
    db = settings.clickhouse.database
    out: list[tuple[str, list[str]]] = []
    for t in TABLES:
        mv, rejected, rejected_view = _views(t, d, db)
        out.append((t.name, [_target_table(t, d, db), rejected, _kafka_table(settings, t, d, db), mv, rejected_view]))
    return out


def clickhouse_ddl(settings: Settings, legacy: bool = False) -> str:
    """The whole ClickHouse DDL, statements separated by blank lines, each ending in ``;``."""
    syntax = "legacy (ClickHouse 18.x positional Kafka engine)" if legacy else "current (Kafka engine SETTINGS)"
    parts = [
        "-- dicomflow analytics warehouse for ClickHouse, generated from the wire-format model.\n"
        f"-- Syntax: {syntax}. Per topic: a Kafka-engine table reading raw messages, a target table,\n"
        "-- a materialized view validating and parsing them, and <table>_rejected for what does not fit.\n",
        f"CREATE DATABASE IF NOT EXISTS {settings.clickhouse.database};\n",
    ]
    for name, statements in table_statements(settings, legacy):
        topic = getattr(settings.topics, next(t for t in TABLES if t.name == name).topic_attr)
        parts.append(f"-- {name} <- {topic}\n")
        parts.extend(statements)
    return "\n".join(parts)


def split_statements(ddl_text: str) -> list[str]:
    """The statements of :func:`clickhouse_ddl` output, one per item, without comments or ``;``.

    The HTTP interface takes one statement per request.
    """
    out: list[str] = []
    for chunk in ddl_text.split(";\n"):
        body = "\n".join(line for line in chunk.splitlines() if not line.startswith("--")).strip()
        if body:
            out.append(body)
    return out


__all__ = ["GROUP_SUFFIX", "clickhouse_ddl", "group_name", "quote", "split_statements", "table_statements"]
