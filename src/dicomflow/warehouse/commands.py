"""``dicomflow warehouse ...``: thin typer wrappers; the logic lives in the warehouse modules."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

warehouse_app = typer.Typer(help="The analytics warehouse: DuckDB sink and ClickHouse / Doris / DuckDB DDL.",
                            no_args_is_help=True)


@warehouse_app.command("ddl")
def ddl_command(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Option("--target", help="Engine: clickhouse, doris or duckdb.", case_sensitive=False)
    ] = "duckdb",
    clickhouse_syntax: Annotated[
        str, typer.Option("--clickhouse-syntax", help="ClickHouse Kafka engine syntax: current (SETTINGS) or legacy (18.x positional).")
    ] = "current",
) -> None:
    """Print the DDL for TARGET, generated from the wire-format model."""
    from dicomflow.cli import settings_of
    from dicomflow.warehouse.ddl import TARGETS, WarehouseError, ddl

    name = target.lower()
    if name not in TARGETS:
        typer.echo(f"--target: expected one of {', '.join(TARGETS)}, got {target!r}", err=True)
        raise typer.Exit(2)
    if clickhouse_syntax not in ("current", "legacy"):
        typer.echo(f"--clickhouse-syntax: expected current or legacy, got {clickhouse_syntax!r}", err=True)
        raise typer.Exit(2)
    chosen: Literal["clickhouse", "doris", "duckdb"] = name
    try:
        text = ddl(settings_of(ctx), chosen, clickhouse_legacy=clickhouse_syntax == "legacy")
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(text, nl=not text.endswith("\n"))


def register(app: typer.Typer) -> None:
    """Add the ``warehouse`` command group."""
    app.add_typer(warehouse_app, name="warehouse")
