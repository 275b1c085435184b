"""``dicomflow report``: what an imaging operations lead asks of the warehouse.

The questions and their definitions are in :mod:`.report_sql`; this module
runs them against a source (the DuckDB warehouse, or ClickHouse over HTTP) and
returns plain data that the terminal, JSON and HTML renderers share.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dicomflow.settings import Settings
from dicomflow.warehouse.report_sql import Dialect, duckdb_base, duckdb_queries, queries

Row = dict[str, Any]


class Source(Protocol):
    """Something that answers a SELECT with rows as dicts."""

    name: str
    dialect: Dialect

    def rows(self, sql: str) -> list[Row]: ...

    def questions(self, largest: int) -> dict[str, str]:
        """The report's queries in this source's dialect, by name."""
        ...


@dataclass
class Report:
    """Every answer of the report, as JSON-ready data."""

    source: str
    generated_at: str
    sections: dict[str, list[Row]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "generated_at": self.generated_at, "seconds": round(self.seconds, 3), **self.sections}


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if hasattr(value, "__int__") and not isinstance(value, (int, bool, str)):
        return int(value)
    return value


class DuckDBSource:
    """The DuckDB warehouse, read through :func:`~dicomflow.warehouse.duck.open_for_reading`."""

    name = "duckdb"
    dialect = Dialect("duckdb")

    def __init__(self, settings: Settings) -> None:
        from dicomflow.warehouse.duck import open_for_reading

        self.conn = open_for_reading(settings)

    def questions(self, largest: int) -> dict[str, str]:
        self.conn.execute(duckdb_base())
        return duckdb_queries(largest)

    def rows(self, sql: str) -> list[Row]:
        cur = self.conn.execute(sql)
        names = [d[0] for d in cur.description or []]
        return [dict(zip(names, (_plain(v) for v in row), strict=True)) for row in cur.fetchall()]

    def close(self) -> None:
        self.conn.close()


class ClickHouseSource:
    """A ClickHouse warehouse created from ``warehouse ddl --target clickhouse``, over HTTP."""

    name = "clickhouse"

    def __init__(self, url: str, database: str) -> None:
        from dicomflow.warehouse.clickhouse_http import ClickHouseHTTP

        self.client = ClickHouseHTTP(url)
        text = self.client.scalar(
            "SELECT count() AS n FROM system.columns WHERE database = "
            f"'{database}' AND table = 'receipts' AND name = 'created_time_text'"
        )
        self.dialect = Dialect("clickhouse", prefix=f"{database}.", final=True, text_datetimes=int(text or 0) > 0)

    def questions(self, largest: int) -> dict[str, str]:
        return queries(self.dialect, largest)

    def rows(self, sql: str) -> list[Row]:
        out = []
        for row in self.client.rows(sql):
            out.append({k: _number(v) for k, v in row.items()})
        return out

    def close(self) -> None:
        pass


def _number(v: Any) -> Any:
    # ClickHouse's JSON quotes 64-bit integers.
    if isinstance(v, str) and v.lstrip("-").isdigit():
        return int(v)
    if isinstance(v, float):
        return round(v, 3)
    return v


def build_report(source: Source, *, largest: int = 10, progress: Callable[[str], None] | None = None) -> Report:
    """Run every question against ``source``.

    Raises:
        WarehouseError / ClickHouseError: the source cannot answer (missing
            table, unreachable server), naming it.
    """
    started = time.perf_counter()
    report = Report(source=source.name, generated_at=dt.datetime.now().isoformat(timespec="seconds"))
    for name, sql in source.questions(largest).items():
        if progress:
            progress(name)
        report.sections[name] = source.rows(sql)
    report.seconds = time.perf_counter() - started
    return report


__all__ = ["ClickHouseSource", "DuckDBSource", "Report", "Source", "build_report"]
