"""The report in the terminal (rich tables) and as JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from dicomflow.warehouse.report import Report

TITLES = {
    "per_day": "Received per day",
    "per_tenant": "Per tenant",
    "per_modality": "Per modality",
    "per_ae": "Per sending AE",
    "latency_per_day": "Ingest latency per day (ms, store event → indexed instance)",
    "dead_letters": "Dead letters by error class",
    "largest_studies": "Largest studies",
}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def summary_line(report: Report) -> str:
    """One line: totals and the dead letters."""
    t = (report.sections.get("totals") or [{}])[0]
    dead = sum(int(r.get("n", 0)) for r in report.sections.get("dead_letters", []))
    return (f"{_fmt(t.get('instances') or 0)} instances, {_fmt(t.get('studies') or 0)} studies, "
            f"{_fmt(t.get('bytes') or 0)} bytes received; {dead:,} dead letters")


def print_report(report: Report, console: Console, sections: tuple[str, ...] | None = None) -> None:
    """Rich tables, one per question, then the summary line."""
    for name, title in TITLES.items():
        if sections is not None and name not in sections:
            continue
        rows = report.sections.get(name, [])
        table = Table(title=title, title_justify="left")
        cols = list(rows[0]) if rows else ["(none)"]
        for c in cols:
            table.add_column(c, justify="left" if c in ("day", "tenant", "modality", "source_ae", "error_class", "study_uid") else "right",
                             overflow="fold")  # a UID or AE title folds over lines, never cut with an ellipsis
        for r in rows:
            table.add_row(*(_fmt(r[c]) for c in cols))
        console.print(table)
    console.print(f"[bold]{summary_line(report)}[/bold] (report took {report.seconds:.2f} s, source {report.source})")


def report_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str)


__all__ = ["TITLES", "print_report", "report_json", "summary_line"]
