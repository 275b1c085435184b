"""The report's questions as SQL, one dialect per engine (DuckDB, ClickHouse).

Definitions (the same in both engines):

- *received*: a receipt (``receipts``, one per store event, from ``log_queue``);
  its day is the day of the store event's ``created_time``. Instances are
  receipts, studies distinct ``(tenant_id, study_uid)``, bytes ``sum(file_size)``.
- *modality*: the series' modality from ``series_states`` (latest version),
  ``unknown`` when the series state has not arrived.
- *ingest latency*: from the store event's ``created_time`` (the receiver wrote
  the file and published) to the instance row's ``indexed_time`` (sink
  metadata: when the consumer published the instance message, after
  PostgreSQL committed; :mod:`dicomflow.warehouse.metadata`), per receipt joined
  to its instance by ``(tenant, patient, study, series, SOP)``; in
  milliseconds, p50/p95/p99 per day. Receipts whose instance is not indexed
  yet (or has no indexed_time) are not counted. The row's ``updated_time``
  cannot serve: the consumer sets it to the store event's ``created_time``.
- *dead letters*: audit events of type ``DLQ`` (``99DICOMFLOW``), by the
  ``error_class`` detail of their participant object.

Every identifier comes from the code or the settings, never from user input;
the queries take no values.
"""

from __future__ import annotations

from dataclasses import dataclass

JOIN_KEYS = ("tenant_id", "patient_id", "study_uid", "series_uid")


def _on(a: str, b: str, keys: tuple[str, ...]) -> str:
    return " AND ".join(f"{a}.{k} = {b}.{k}" for k in keys)


@dataclass(frozen=True)
class Dialect:
    """What differs between engines: table references, day and time arithmetic, quantiles."""

    name: str
    #: Prefix of table names (``db.`` for ClickHouse).
    prefix: str = ""
    #: ClickHouse: read replacing tables with FINAL.
    final: bool = False
    #: ClickHouse 18.x tables keep datetimes as DateTime + ``<name>_text``.
    text_datetimes: bool = False

    def table(self, name: str, replacing: bool = False) -> str:
        return f"{self.prefix}{name}" + (" FINAL" if replacing and self.final else "")

    def day(self, alias: str, col: str) -> str:
        if self.name == "duckdb":
            return f"CAST({alias}.{col} AS DATE)"
        return f"toDate({alias}.{col})"

    def epoch_s(self, alias: str, col: str, *, metadata: bool = False) -> str:
        """Seconds since the epoch, with the fraction, as a float (``metadata``: a sink column, no ``_text`` twin)."""
        if self.name == "duckdb":
            return f"(epoch_us({alias}.{col}) / 1e6)"
        if self.text_datetimes and metadata:
            return f"toFloat64(toUInt32({alias}.{col}))"
        if self.text_datetimes:
            text = f"{alias}.{col}_text"
            return f"(toFloat64(toUInt32({alias}.{col})) + toFloat64OrZero(concat('0', extract({text}, '\\\\.[0-9]+'))))"
        return f"(toFloat64(toUnixTimestamp64Micro({alias}.{col})) / 1e6)"

    def percentiles(self, expr: str) -> str:
        if self.name == "duckdb":
            return (f"quantile_cont({expr}, 0.5) AS p50, quantile_cont({expr}, 0.95) AS p95, "
                    f"quantile_cont({expr}, 0.99) AS p99")
        return (f"quantileExact(0.5)({expr}) AS p50, quantileExact(0.95)({expr}) AS p95, "
                f"quantileExact(0.99)({expr}) AS p99")

    def distinct_studies(self, alias: str) -> str:
        if self.name == "duckdb":
            return f"count(DISTINCT ({alias}.tenant_id, {alias}.study_uid))"
        return f"uniqExact({alias}.tenant_id, {alias}.study_uid)"

    def dlq_class(self) -> tuple[str, str]:
        """(error class expression, is-a-dead-letter condition) over audit_events."""
        if self.name == "duckdb":
            return ("coalesce(json_extract_string(participant_objects, '$[0].details.error_class'), 'unknown')",
                    "json_extract_string(event_type, '$[0].code') = 'DLQ'")
        return ("if(visitParamExtractString(participant_objects, 'error_class') = '', 'unknown', "
                "visitParamExtractString(participant_objects, 'error_class'))",
                "position(event_type, '\"code\":\"DLQ\"') > 0")

    def cast_text(self, expr: str) -> str:
        return f"CAST({expr} AS VARCHAR)" if self.name == "duckdb" else f"toString({expr})"


def queries(d: Dialect, largest: int = 10) -> dict[str, str]:
    """Every question of the report, by name."""
    r = d.table("receipts")
    s = d.table("series_states", replacing=True)
    i = d.table("instances", replacing=True)
    a = d.table("audit_events")
    sums = f"count(*) AS instances, {d.distinct_studies('r')} AS studies, sum(r.file_size) AS bytes"
    modality = "coalesce(s.modality, 'unknown')"
    with_state = f"{r} AS r LEFT JOIN (SELECT {', '.join(JOIN_KEYS)}, modality FROM {s}) AS s ON {_on('r', 's', JOIN_KEYS)}"
    latency_ms = f"(({d.epoch_s('i', 'indexed_time', metadata=True)}) - ({d.epoch_s('r', 'created_time')})) * 1000.0"
    inst_keys = (*JOIN_KEYS, "sop_uid")
    error_class, is_dlq = d.dlq_class()
    day = d.day("r", "created_time")
    return {
        "totals": f"SELECT {sums} FROM {r} AS r",
        "per_day": f"SELECT {d.cast_text(day)} AS day, {sums} FROM {r} AS r GROUP BY day ORDER BY day",
        "per_tenant": f"SELECT r.tenant_id AS tenant, {sums} FROM {r} AS r GROUP BY tenant ORDER BY instances DESC, tenant",
        "per_modality": f"SELECT {modality} AS modality, {sums} FROM {with_state} GROUP BY modality ORDER BY instances DESC, modality",
        "per_ae": f"SELECT r.source_ae AS source_ae, {sums} FROM {r} AS r GROUP BY source_ae ORDER BY instances DESC, source_ae",
        "per_day_modality": (
            f"SELECT {d.cast_text(day)} AS day, {modality} AS modality, count(*) AS instances "
            f"FROM {with_state} GROUP BY day, modality ORDER BY day, modality"
        ),
        "latency_per_day": (
            f"SELECT {d.cast_text(day)} AS day, count(*) AS n, {d.percentiles('lat')} FROM ("
            f"SELECT r.created_time AS created_time, {latency_ms} AS lat FROM {r} AS r "
            f"INNER JOIN (SELECT {', '.join(inst_keys)}, indexed_time FROM {i} WHERE indexed_time IS NOT NULL) AS i "
            f"ON {_on('r', 'i', inst_keys)}) AS r GROUP BY day ORDER BY day"
        ),
        "dead_letters": (
            f"SELECT {error_class} AS error_class, count(*) AS n FROM {a} WHERE {is_dlq} "
            "GROUP BY error_class ORDER BY n DESC, error_class"
        ),
        "largest_studies": (
            f"SELECT r.tenant_id AS tenant, r.study_uid AS study_uid, count(*) AS instances, sum(r.file_size) AS bytes "
            f"FROM {r} AS r GROUP BY tenant, study_uid ORDER BY bytes DESC, study_uid LIMIT {int(largest)}"
        ),
    }


#: DuckDB: one pass joins each receipt to its series' modality and its instance's
#: latency into a temporary table; every question then reads that table only.
BASE_TABLE = "report_base"


def duckdb_base() -> str:
    """The statement creating :data:`BASE_TABLE` (a read-only connection may create temporary tables)."""
    inst_keys = (*JOIN_KEYS, "sop_uid")
    return (
        f"CREATE OR REPLACE TEMP TABLE {BASE_TABLE} AS SELECT r.tenant_id, r.study_uid, r.source_ae, r.file_size, "
        "CAST(r.created_time AS DATE) AS day, coalesce(s.modality, 'unknown') AS modality, "
        "(epoch_us(i.indexed_time) - epoch_us(r.created_time)) / 1000.0 AS lat "
        f"FROM receipts AS r LEFT JOIN (SELECT {', '.join(JOIN_KEYS)}, modality FROM series_states) AS s "
        f"ON {_on('r', 's', JOIN_KEYS)} "
        f"LEFT JOIN (SELECT {', '.join(inst_keys)}, indexed_time FROM instances) AS i ON {_on('r', 'i', inst_keys)}"
    )


def duckdb_queries(largest: int = 10) -> dict[str, str]:
    """The questions of :func:`queries` over :data:`BASE_TABLE` (same names, same columns)."""
    b = BASE_TABLE
    sums = "count(*) AS instances, count(DISTINCT (tenant_id, study_uid)) AS studies, sum(file_size) AS bytes"
    d = Dialect("duckdb")
    error_class, is_dlq = d.dlq_class()
    return {
        "totals": f"SELECT {sums} FROM {b}",
        "per_day": f"SELECT CAST(day AS VARCHAR) AS day, {sums} FROM {b} GROUP BY 1 ORDER BY 1",
        "per_tenant": f"SELECT tenant_id AS tenant, {sums} FROM {b} GROUP BY tenant ORDER BY instances DESC, tenant",
        "per_modality": f"SELECT modality, {sums} FROM {b} GROUP BY modality ORDER BY instances DESC, modality",
        "per_ae": f"SELECT source_ae, {sums} FROM {b} GROUP BY source_ae ORDER BY instances DESC, source_ae",
        "per_day_modality": (f"SELECT CAST(day AS VARCHAR) AS day, modality, count(*) AS instances FROM {b} "
                             "GROUP BY 1, modality ORDER BY 1, modality"),
        "latency_per_day": (f"SELECT CAST(day AS VARCHAR) AS day, count(lat) AS n, {d.percentiles('lat')} FROM {b} "
                            "WHERE lat IS NOT NULL GROUP BY 1 ORDER BY 1"),
        "dead_letters": (f"SELECT {error_class} AS error_class, count(*) AS n FROM audit_events WHERE {is_dlq} "
                         "GROUP BY error_class ORDER BY n DESC, error_class"),
        "largest_studies": (f"SELECT tenant_id AS tenant, study_uid, count(*) AS instances, sum(file_size) AS bytes FROM {b} "
                            f"GROUP BY tenant, study_uid ORDER BY bytes DESC, study_uid LIMIT {int(largest)}"),
    }


__all__ = ["BASE_TABLE", "Dialect", "duckdb_base", "duckdb_queries", "queries"]
