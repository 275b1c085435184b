"""Apache Doris DDL: one table and one Routine Load per topic, from the wire-format model.

- ``receipts`` (``log_queue``): ``DUPLICATE KEY`` on the reference's keys
  (tenant, patient, study, series, SOP) plus ``study_date``;
- ``series_states`` and ``instances``: ``UNIQUE KEY`` with merge-on-write and
  ``updated_time`` as sequence column, so a replayed older version never
  overwrites a newer one;
- ``audit_events``: ``DUPLICATE KEY (tenant_id, event_date_time)``, nested
  parts as ``JSON`` columns (the DuckDB sink's ``event_key`` content hash is not
  a wire field and is not computed here).

Partitions: monthly dynamic partitions on ``study_date`` (receipts, states;
``event_date_time`` for audit), created ``history_partitions`` months back
because study dates are historical, never dropped (no ``dynamic_partition.start``),
with one catch-all partition ``p_before`` for anything older. Doris wants partition columns
among the key columns, hence ``study_date`` in the keys. The image message
carries no study date, so ``instances`` is not partitioned (as in the reference).

Datetimes: each is loaded into a ``<name>_text`` column and mapped with
``CAST(substr(replace(text, 'T', ' '), 1, 26) AS DATETIME(6))``, so the wire's
``T`` separator and up to nine fractional digits (kept to six) parse on any
Doris version.

Sink metadata (the DuckDB sink's ``instances.indexed_time``, the Kafka
timestamp of the message) is not generated: a routine load reads only the
JSON payload, so a Doris warehouse has no indexing time to measure ingest
latency by.

Defects of the reference script not repeated (a test checks each): no
trailing comma after the last column, every loaded column exists in its table
(``series_related_instances`` is a state column here), and nothing is ``NOT
NULL`` that the message may omit (no ``study_date_origin`` on instances).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from dicomflow.settings import Settings
from dicomflow.warehouse.schema import AUDIT_KEY_COLUMN, TABLES, Column, Table

#: Routine load / consumer group name part per table (the reference's medical_object_load ...).
LOAD_SUFFIX: dict[str, str] = {"receipts": "object", "series_states": "state", "instances": "image", "audit_events": "audit"}

_REFERENCE_KEYS = ("tenant_id", "patient_id", "study_uid", "series_uid", "sop_uid")


@dataclass(frozen=True)
class LoadColumn:
    """How one wire field travels: ``$.field`` → source column → table column."""

    field: str
    jsonpath: str
    source: str
    target: str
    #: Mapping expression when source != target.
    expression: str | None


def doris_columns(t: Table) -> tuple[Column, ...]:
    """The table's columns as Doris stores them (the audit content hash dropped)."""
    return tuple(c for c in t.columns if c.name != AUDIT_KEY_COLUMN)


def doris_key(t: Table) -> tuple[str, ...]:
    """Key columns, in order (the leading columns of the table)."""
    if t.name == "receipts":
        key: tuple[str, ...] = _REFERENCE_KEYS
    elif t.name == "audit_events":
        key = ("tenant_id", "event_date_time")
    else:
        key = t.key
    if t.partition_column and t.partition_column not in key:
        key = (*key, t.partition_column)
    return key


def partition_column(t: Table) -> str | None:
    return "event_date_time" if t.name == "audit_events" else t.partition_column


def column_type(c: Column) -> str:
    w = c.wire_type
    if w == "str":
        return f"VARCHAR({c.max_bytes})" if c.max_bytes else "STRING"
    return {
        "date": "DATE", "datetime": "DATETIME(6)", "time": "VARCHAR(16)", "int32": "INT", "int64": "BIGINT",
        "float": "DOUBLE", "bool": "BOOLEAN", "json": "JSON",
    }[w]


def load_columns(t: Table) -> list[LoadColumn]:
    """Every wire field of ``t`` with its jsonpath and the column it lands in."""
    out: list[LoadColumn] = []
    for c in doris_columns(t):
        if c.wire_type == "datetime":
            src = f"{c.name}_text"
            expr = f"CAST(substr(replace({src}, 'T', ' '), 1, 26) AS DATETIME(6))"
            out.append(LoadColumn(c.name, f"$.{c.name}", src, c.name, expr))
        else:
            out.append(LoadColumn(c.name, f"$.{c.name}", c.name, c.name, None))
    return out


def load_name(settings: Settings, t: Table) -> str:
    return f"{settings.doris.group_prefix}_{LOAD_SUFFIX[t.name]}_load"


def group_id(settings: Settings, t: Table) -> str:
    return f"{settings.doris.group_prefix}_{LOAD_SUFFIX[t.name]}_group"


def _q(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def history_start(months_back: int, today: dt.date | None = None) -> dt.date:
    """First day of the month ``months_back`` months before ``today``'s month."""
    today = today or dt.date.today()
    index = today.year * 12 + today.month - 1 - months_back
    return dt.date(index // 12, index % 12 + 1, 1)


def create_table(settings: Settings, t: Table, today: dt.date | None = None) -> str:
    d = settings.doris
    key = doris_key(t)
    by_name = {c.name: c for c in doris_columns(t)}
    ordered = [by_name[k] for k in key] + [c for c in doris_columns(t) if c.name not in key]
    lines = [f"    `{c.name}` {column_type(c)} {'NULL' if c.nullable else 'NOT NULL'}" for c in ordered]
    model = "DUPLICATE KEY" if t.kind == "append" else "UNIQUE KEY"
    parts = [
        f"CREATE TABLE IF NOT EXISTS `{d.database}`.`{t.name}` (\n" + ",\n".join(lines) + "\n)",
        f"{model}({', '.join(f'`{k}`' for k in key)})",
    ]
    pcol = partition_column(t)
    if pcol:
        # One catch-all partition below the dynamic ones, so an older study date is stored, not rejected.
        start = history_start(d.history_partitions, today)
        parts.append(f"PARTITION BY RANGE(`{pcol}`) (\n    PARTITION `p_before` VALUES LESS THAN (\"{start.isoformat()}\")\n)")
    parts.append(f"DISTRIBUTED BY HASH(`tenant_id`) BUCKETS {d.buckets}")
    props: list[tuple[str, str]] = [("replication_num", str(d.replication_num))]
    if t.kind == "latest":
        props.append(("enable_unique_key_merge_on_write", "true"))
        if t.version_column:
            props.append(("function_column.sequence_col", t.version_column))
    if pcol:
        props += [
            ("dynamic_partition.enable", "true"),
            ("dynamic_partition.time_unit", "MONTH"),
            ("dynamic_partition.end", str(d.future_partitions)),
            ("dynamic_partition.prefix", "p"),
            ("dynamic_partition.buckets", str(d.buckets)),
            ("dynamic_partition.replication_num", str(d.replication_num)),
            ("dynamic_partition.create_history_partition", "true"),
            ("dynamic_partition.history_partition_num", str(d.history_partitions)),
        ]
    parts.append("PROPERTIES (\n" + ",\n".join(f"    {_q(k)} = {_q(v)}" for k, v in props) + "\n)")
    return "\n".join(parts) + ";\n"


def routine_load(settings: Settings, t: Table) -> str:
    d = settings.doris
    cols = load_columns(t)
    column_list = [c.source for c in cols] + [f"{c.target} = {c.expression}" for c in cols if c.expression]
    jsonpaths = json.dumps([c.jsonpath for c in cols], separators=(",", ":"))
    props = [
        ("format", "json"),
        ("jsonpaths", jsonpaths),
        ("strip_outer_array", "false"),
        ("max_batch_interval", str(d.max_batch_interval_s)),
        ("max_error_number", str(d.max_error_number)),
    ]
    kafka = [
        ("kafka_broker_list", d.brokers or settings.kafka.brokers),
        ("kafka_topic", getattr(settings.topics, t.topic_attr)),
        ("property.group.id", group_id(settings, t)),
        ("property.kafka_default_offsets", "OFFSET_BEGINNING"),
    ]
    return (
        f"CREATE ROUTINE LOAD `{d.database}`.`{load_name(settings, t)}` ON `{t.name}`\n"
        "COLUMNS(" + ", ".join(column_list) + ")\n"
        "PROPERTIES (\n" + ",\n".join(f"    {_q(k)} = {_q(v)}" for k, v in props) + "\n)\n"
        "FROM KAFKA (\n" + ",\n".join(f"    {_q(k)} = {_q(v)}" for k, v in kafka) + "\n);\n"
    )


def doris_ddl(settings: Settings) -> str:
    """The whole Doris DDL: the database, then per topic its table and its routine load."""
    parts = [
        "-- dicomflow analytics warehouse for Apache Doris, generated from the wire-format model.\n"
        "-- Per topic a table and a Routine Load (format json, explicit jsonpaths and columns).\n",
        f"CREATE DATABASE IF NOT EXISTS `{settings.doris.database}`;\n",
    ]
    for t in TABLES:
        parts.append(f"-- {t.name} <- {getattr(settings.topics, t.topic_attr)}\n")
        parts.append(create_table(settings, t))
        parts.append(routine_load(settings, t))
    return "\n".join(parts)


__all__ = [
    "LOAD_SUFFIX", "LoadColumn", "column_type", "create_table", "doris_columns", "doris_ddl", "doris_key",
    "group_id", "load_columns", "load_name", "partition_column", "routine_load",
]
