"""``dicomflow storage migrate``: move the indexed objects between the filesystem and S3 (:mod:`dicomflow.storage_migrate`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from dicomflow.cli.root import settings_of
from dicomflow.cli.tables import make_console

if TYPE_CHECKING:
    from rich.console import Console

    from dicomflow.storage_migrate import MigrateOptions, Summary

app = typer.Typer(help="The storage backends: move instances between the filesystem and S3.", no_args_is_help=True)

#: Failures listed in the summary (every one is also logged as a warning on stderr).
SHOWN = 50


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    to: Annotated[str, typer.Option("--to", help="The target backend: s3 (copying from storage.root) or "
                                                 "filesystem (copying from storage.s3).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be copied and repointed; change nothing.")]
    = False,
    delete_source: Annotated[bool, typer.Option(
        "--delete-source/--keep-source",
        help="Delete each source object once its copy verified and its rows point at it (default: keep).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Instances per batch (one transaction).")]
    = 500,
    jobs: Annotated[int, typer.Option("--jobs", min=1, max=64, help="Objects copied at once.")] = 8,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")] = True,
) -> None:
    """Copy every indexed instance, served copy and thumbnail to the other backend, verify, repoint the index.

    Both sides come from the storage settings: the filesystem is storage.root,
    S3 is storage.s3 (bucket, prefix, endpoint, credentials). Safe to stop and run again: rows already pointing at
    the target are skipped, objects already there with the same bytes are not
    copied again. Afterwards set storage.backend to the target. Exit code 1
    when some object could not be migrated (listed; its rows unchanged).
    """
    from dicomflow.storage_migrate import MigrateOptions

    if to not in ("s3", "filesystem"):
        typer.echo(f"storage migrate: --to must be s3 or filesystem, not {to!r}", err=True)
        raise typer.Exit(2)
    options = MigrateOptions(to="s3" if to == "s3" else "filesystem", dry_run=dry_run, delete_source=delete_source,
                             batch_size=batch_size, jobs=jobs)
    summary = _run(ctx, options, progress)
    print_summary(make_console(), summary, options)
    if summary.failed or summary.rows_failed:
        raise typer.Exit(1)


def _run(ctx: typer.Context, options: MigrateOptions, progress: bool) -> Summary:
    """The migration under a progress bar (stderr); a store or database outage exits 1 with its message."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomflow.blobs import BlobError
    from dicomflow.errors import ConfigError, StoreError
    from dicomflow.storage_migrate import Migration

    settings = settings_of(ctx)
    errors = make_console(stderr=True)
    try:
        with Progress(
            TextColumn("migrating to {task.fields[to]}"), BarColumn(), MofNCompleteColumn(), TextColumn("instances"),
            TextColumn("{task.fields[copied]} copied, {task.fields[failed]} failed"), TimeElapsedColumn(),
            console=errors, disable=not progress, transient=False,
        ) as bar:
            migration = Migration(settings.storage, settings.database, options)
            task = bar.add_task("migrate", total=migration.count(), to=options.to, copied=0, failed=0)
            migration.on_batch = lambda done, s: bar.update(task, advance=done, copied=s.copied, failed=len(s.failed))
            return migration.run()
    except (BlobError, StoreError, ConfigError) as exc:
        errors.print(f"storage migrate stopped: {exc}; run it again to resume", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from exc


def print_summary(console: Console, s: Summary, options: MigrateOptions) -> None:
    """Counts, then every failure (the first :data:`SHOWN`; all are in the warnings on stderr)."""
    from rich.table import Table

    would = "would be " if options.dry_run else ""
    table = Table(title=f"dicomflow storage migrate --to {options.to}{' (dry run)' if options.dry_run else ''}",
                  show_header=False)
    table.add_row("instances", str(s.instances))
    table.add_row(f"objects {would}copied", f"{s.copied} ({s.bytes_copied} bytes)")
    table.add_row("objects already in the target (not copied again)", str(s.present))
    checks = ", ".join(f"{n} by {c}" for c, n in sorted(s.checks.items())) or "-"
    table.add_row("verified", checks if not options.dry_run else f"{checks} (existing target objects only)")
    table.add_row(f"rows {would}repointed", str(s.rows_updated))
    table.add_row("rows already pointing at the target", str(s.rows_skipped))
    table.add_row("rows left unchanged (failed)", str(s.rows_failed))
    if options.delete_source:
        table.add_row("source objects deleted", str(s.deleted))
    table.add_row("objects failed", str(len(s.failed)))
    console.print(table)
    if s.failed:
        console.print("[bold red]failed[/bold red] (their rows are unchanged; fix the cause and run again):")
        for location, reason in s.failed[:SHOWN]:
            console.print(f"    {location}: {reason}", highlight=False, soft_wrap=True)
        if len(s.failed) > SHOWN:
            console.print(f"    ... and {len(s.failed) - SHOWN} more (each one is in the warnings on stderr)")
    if not options.dry_run and not s.failed:
        console.print(f"done: set storage.backend = \"{options.to}\" for every stage", highlight=False)
