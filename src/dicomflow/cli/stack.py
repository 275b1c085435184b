"""``dicomflow stack up | down | status``."""

from __future__ import annotations

import typer

from dicomflow.cli.root import settings_of

app = typer.Typer(
    help="Run the local Kafka broker and PostgreSQL server (and, on request, ClickHouse).", no_args_is_help=True
)


@app.command("up")
def up(
    ctx: typer.Context,
    clickhouse: bool = typer.Option(
        False, "--clickhouse", help="Also start the local ClickHouse server (or set [stack] clickhouse = true)."
    ),
) -> None:
    """Install (first time) and start Kafka and PostgreSQL on 127.0.0.1; wait until they serve."""
    from dicomflow.errors import StackError
    from dicomflow.stack import LocalStack

    try:
        statuses = LocalStack(settings_of(ctx)).up(clickhouse=True if clickhouse else None)
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print(statuses)


@app.command("down")
def down(ctx: typer.Context) -> None:
    """Stop the local services by their PIDs."""
    from dicomflow.errors import StackError
    from dicomflow.stack import LocalStack

    stack = LocalStack(settings_of(ctx))
    try:
        stack.down()
    except StackError as exc:
        typer.echo(f"stack down failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print(stack.status())


@app.command("status")
def status(
    ctx: typer.Context,
    check: bool = typer.Option(False, "--check", help="Exit 3 unless every service runs."),
) -> None:
    """Say what runs, where, with which PID."""
    from dicomflow.stack import LocalStack

    statuses = LocalStack(settings_of(ctx)).status()
    _print(statuses)
    if check and not all(s.running for s in statuses):
        raise typer.Exit(3)


def _print(statuses: list) -> None:  # type: ignore[type-arg]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dicomflow local stack")
    for col in ("service", "state", "PID", "address", "log"):
        table.add_column(col)
    for s in statuses:
        table.add_row(s.name, "running" if s.running else "stopped", str(s.pid or "-"), s.address, s.log_file)
    Console().print(table)
