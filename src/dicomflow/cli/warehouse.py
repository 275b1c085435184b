"""``dicomflow warehouse ddl | run``: thin typer wrappers; the logic lives in :mod:`dicomflow.warehouse`."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, Optional

import typer

from dicomflow.cli.root import settings_of
from dicomflow.settings import Settings

if TYPE_CHECKING:  # the command imports them when it runs
    from rich.status import Status

    from dicomflow.warehouse.sink import SinkSummary

app = typer.Typer(help="The analytics warehouse: DuckDB sink and ClickHouse / Doris / DuckDB DDL.",
                            no_args_is_help=True)


@app.command("ddl")
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


@app.command("run")
def run_command(
    ctx: typer.Context,
    max_messages: Annotated[
        Optional[int], typer.Option("--max-messages", min=1, help="Exit after committing this many messages.")
    ] = None,
    until_idle: Annotated[
        Optional[float],
        typer.Option("--until-idle", min=0.0,
                     help="Exit after this many seconds without a new message (counted while partitions are assigned)."),
    ] = None,
    path: Annotated[
        Optional[Path], typer.Option("--path", help="DuckDB file (default: [warehouse] path, .dicomflow/warehouse.duckdb).")
    ] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics and /healthz here (0: off).")
    ] = None,
) -> None:
    """Consume log, state, image and audit events into the DuckDB warehouse, exactly once.

    Runs until SIGTERM or SIGINT (the batch in hand is written first), or
    until --max-messages / --until-idle say so. Messages that do not fit
    their table go to <topic>.dlq with the reason in headers.
    """
    import logging

    from rich.console import Console

    from dicomflow.cli.stopping import stop_on_signals
    from dicomflow.errors import ConsumerError
    from dicomflow.warehouse.ddl import WarehouseError
    from dicomflow.warehouse.sink import WarehouseSink

    settings = _with_options(settings_of(ctx), path, metrics_port)
    console = Console(stderr=True)
    status = console.status("warehouse: waiting for messages") if sys.stderr.isatty() else None
    sink = WarehouseSink(settings, max_messages=max_messages, until_idle_s=until_idle,
                         on_batch=_show_progress(status), stop=stop_on_signals())
    try:
        if status is not None:
            with status:
                summary = sink.run()
        else:
            summary = sink.run()
    except WarehouseError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ConsumerError as exc:
        logging.getLogger("dicomflow.warehouse").error("warehouse sink failed: %s", exc)
        raise typer.Exit(1) from exc
    rows = ", ".join(f"{k} {v:,}" for k, v in summary.rows.items())
    snap = f", last {summary.last_snapshot_s:.2f} s" if summary.last_snapshot_s is not None else ""
    console.print(
        f"warehouse {settings.warehouse.path}: consumed {summary.consumed:,} in {summary.batches:,} batches; "
        f"rows written: {rows}; {summary.dead_lettered} dead-lettered; {summary.retries} retries; "
        f"{summary.snapshots} snapshots{snap}; {summary.stopped_because}",
        highlight=False,
    )


def _with_options(settings: Settings, path: Path | None, metrics_port: int | None) -> Settings:
    """The settings with the command line's overrides."""
    if path is not None:
        settings = dataclasses.replace(settings, warehouse=dataclasses.replace(settings.warehouse, path=path))
    if metrics_port is not None:
        settings = dataclasses.replace(settings, metrics=dataclasses.replace(settings.metrics, port=metrics_port))
    return settings


def _show_progress(status: Status | None) -> Callable[[SinkSummary], None]:
    """The sink's on_batch: the status line on a terminal, nothing otherwise."""

    def on_batch(s: SinkSummary) -> None:
        if status is not None:
            rows = ", ".join(f"{k} {v:,}" for k, v in s.rows.items())
            status.update(f"warehouse: {s.consumed:,} consumed in {s.batches:,} batches; rows {rows}; "
                          f"{s.dead_lettered} dead-lettered")

    return on_batch
