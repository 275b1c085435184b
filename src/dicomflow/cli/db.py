"""``dicomflow db migrate | status``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dicomflow.cli.root import settings_of
from dicomflow.cli.tables import print_json

if TYPE_CHECKING:
    from dicomflow.store import StoreStatus

app = typer.Typer(help="Manage the PostgreSQL schema and inspect the tables.", no_args_is_help=True)


@app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Apply pending schema migrations (safe to run from several processes at once)."""
    from dicomflow.errors import StoreError
    from dicomflow.store import PgStore

    store = PgStore(settings_of(ctx).database)
    try:
        applied = store.migrate()
    except StoreError as exc:
        typer.echo(f"db migrate failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    if applied:
        typer.echo(f"applied {', '.join(applied)} to {store.where}")
    else:
        typer.echo(f"{store.where} is up to date")


@app.command("status")
def status(
    ctx: typer.Context,
    estimate: Annotated[
        bool, typer.Option("--estimate", help="Row counts from the statistics instead of count(*) (fast on big tables).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (keys in docs/operations.md) instead of text.")
    ] = False,
) -> None:
    """Show applied and pending migrations and the row count of each table; exit code 3 when some are pending."""
    from dicomflow.errors import StoreError
    from dicomflow.store import PgStore

    store = PgStore(settings_of(ctx).database)
    try:
        result = store.status(exact=not estimate)
    except StoreError as exc:
        typer.echo(f"db status failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
    if as_json:
        print_json(status_json(store.where, result))
    else:
        _print_status(store.where, result)
    if result.pending:
        raise typer.Exit(3)


def status_json(where: str, result: StoreStatus) -> dict[str, object]:
    """``db status --json``: the database, applied and pending migrations, rows per table (None: no table)."""
    return {
        "database": where,
        "applied": [{"version": m.version, "name": m.name, "applied_at": m.applied_at.isoformat(),
                     "modified": m.modified} for m in result.applied],
        "pending": list(result.pending),
        "counts": dict(result.counts),
        "counts_exact": result.exact,
    }


def _print_status(where: str, result: StoreStatus) -> None:
    typer.echo(f"database {where}")
    if not result.applied:
        typer.echo("migrations: none applied")
    for m in result.applied:
        note = "  (file modified since)" if m.modified else ""
        typer.echo(f"  applied  {m.version}_{m.name}  {m.applied_at:%Y-%m-%d %H:%M:%S %Z}{note}")
    for version in result.pending:
        typer.echo(f"  pending  {version}")
    prefix = "" if result.exact else "~"
    for table, count in result.counts.items():
        shown = "missing" if count is None else f"{prefix}{count}"
        typer.echo(f"{table:<20} {shown}")
