"""``dicomflow stack up | down | status``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dicomflow.cli.root import settings_of
from dicomflow.cli.tables import Col, print_json, print_table

if TYPE_CHECKING:
    from dicomflow.stack import LocalStack, ServiceStatus

app = typer.Typer(
    help="Run the local Kafka (one broker or a cluster) and PostgreSQL server (and, on request, ClickHouse).",
    no_args_is_help=True,
)

_BROKERS = typer.Option(None, "--brokers", min=1,
                        help="Kafka nodes (combined KRaft broker + controller each); default: what the last `stack up` "
                             "started (<stack dir>/stack.json), else stack.kafka_brokers (1).")
_SECURE = typer.Option(None, "--secure/--plain",
                       help="Kafka with a SASL_SSL listener (SCRAM-SHA-512, a test CA) and PostgreSQL with TLS; "
                            "default: stack.secure.")


def _stack(ctx: typer.Context, brokers: int | None, secure: bool | None) -> LocalStack:
    from dicomflow.errors import StackError
    from dicomflow.stack import LocalStack

    try:
        return LocalStack(settings_of(ctx), brokers=brokers, secure=secure)
    except StackError as exc:
        typer.echo(f"stack: {exc}", err=True)
        raise typer.Exit(1) from exc


@app.command("up")
def up(
    ctx: typer.Context,
    brokers: int | None = _BROKERS,
    secure: bool | None = _SECURE,
    clickhouse: bool = typer.Option(
        False, "--clickhouse", help="Also start the local ClickHouse server (or set [stack] clickhouse = true)."
    ),
    s3: bool = typer.Option(
        False, "--s3", help="Also start S3Proxy, a local S3 server (or set [stack] s3 = true); tests and demos only."
    ),
) -> None:
    """Install (first time) and start Kafka and PostgreSQL on 127.0.0.1; wait until they serve.

    With --secure, the passwords and certificates are generated into the stack
    folder and the client settings are written to <stack dir>/kafka-client.toml
    (mode 0600; pass it with --config) and printed. With --s3, the S3 credentials are
    drawn at start and the [storage] settings written to <stack dir>/s3/client.toml (0600).
    """
    from dicomflow.errors import StackError

    stack = _stack(ctx, brokers, secure)
    try:
        statuses = stack.up(clickhouse=True if clickhouse else None, s3=True if s3 else None)
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print(statuses)
    typer.echo(f"kafka.brokers = \"{stack.kafka.bootstrap}\"")
    security = stack.kafka.security()
    if security is not None:
        typer.echo(f"Kafka client settings ({security.client_settings_file}, mode 0600; use --config):")
        typer.echo(security.client_settings_toml(stack.kafka.bootstrap))
    if stack.secure:
        db = stack.postgres.client_settings(secure=True)
        typer.echo("PostgreSQL client settings (TLS, verify-full against the stack's test CA):")
        typer.echo(f'[database]\nsslmode = "{db.sslmode}"\nsslrootcert = "{db.sslrootcert}"')
    if stack.s3proxy.pid() is not None:
        typer.echo(f"S3 client settings: {stack.s3proxy.client_file} (mode 0600; use --config)")


@app.command("down")
def down(ctx: typer.Context, brokers: int | None = _BROKERS, secure: bool | None = _SECURE) -> None:
    """Stop the local services by their PIDs: every Kafka node of the stack folder, then PostgreSQL."""
    from dicomflow.errors import StackError

    stack = _stack(ctx, brokers, secure)
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
    brokers: int | None = _BROKERS,
    secure: bool | None = _SECURE,
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys in docs/operations.md) instead of a table."),
) -> None:
    """Say what runs, where, with which PID: every Kafka node, then PostgreSQL.

    After `stack up`, the stack folder remembers what was started (stack.json):
    status follows it, so `--brokers` is not needed again.
    """
    stack = _stack(ctx, brokers, secure)
    statuses = stack.status()
    if as_json:
        print_json(status_json(stack, statuses))
    else:
        _print(statuses)
    if check and not all(s.running for s in statuses):
        raise typer.Exit(3)


def status_json(stack: LocalStack, statuses: list[ServiceStatus]) -> dict[str, object]:
    """``stack status --json``: the folder, its state file (None before `up`), Kafka's layout, every service."""
    from dicomflow.stack.state import state_path

    path = state_path(stack.settings.stack.dir)
    return {
        "stack_dir": str(stack.settings.stack.dir.resolve()),
        "state_file": str(path) if stack.state is not None else None,
        "kafka": {"brokers": stack.kafka.bootstrap, "nodes": stack.kafka.size, "secure": stack.kafka.secure},
        "services": [{"name": s.name, "running": s.running, "pid": s.pid, "address": s.address,
                      "log_file": s.log_file} for s in statuses],
        "all_running": all(s.running for s in statuses),
    }


def _print(statuses: list[ServiceStatus]) -> None:
    print_table(
        "dicomflow local stack",
        (Col("service", "id"), Col("state"), Col("PID", "number"), Col("address", "id"), Col("log", "id")),
        ([s.name, "running" if s.running else "stopped", str(s.pid or "-"), s.address, s.log_file] for s in statuses),
    )
