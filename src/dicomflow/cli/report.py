"""``dicomflow report``: thin typer wrapper over :mod:`dicomflow.warehouse.report` and its renderers."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of


def report(
    ctx: typer.Context,
    clickhouse: Annotated[
        Optional[str],
        typer.Option("--clickhouse", help="Read a ClickHouse warehouse at this HTTP URL instead of the DuckDB file."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write the report as one self-contained HTML page.")] = None,
    largest: Annotated[int, typer.Option("--largest", help="How many of the largest studies to list.")] = 10,
) -> None:
    """Instances, studies and bytes per day, tenant, modality and sending AE; latency; dead letters; largest studies."""
    from dicomflow.cli.tables import make_console
    from dicomflow.errors import DicomflowError
    from dicomflow.warehouse.report import ClickHouseSource, DuckDBSource, build_report
    from dicomflow.warehouse.report_html import render_html
    from dicomflow.warehouse.report_text import print_report, report_json

    settings = settings_of(ctx)
    console = make_console(stderr=as_json)  # a pipe gets whole rows, never a cut UID
    try:
        source: ClickHouseSource | DuckDBSource
        source = ClickHouseSource(clickhouse, settings.clickhouse.database) if clickhouse else DuckDBSource(settings)
        try:
            with console.status("querying the warehouse") as status:
                report = build_report(source, largest=largest, progress=lambda name: status.update(f"querying: {name}"))
        finally:
            source.close()
    except DicomflowError as exc:
        typer.echo(f"report failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    if as_json:
        typer.echo(report_json(report))
    else:
        print_report(report, console)
    if html is not None:
        html.write_text(render_html(report), encoding="utf-8")
        console.print(f"HTML report written to {html.resolve()}")

