"""``dicomflow publish PATH...``: publish store events for folders of DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dicomflow.cli.root import settings_of

if TYPE_CHECKING:
    from rich.console import Console

    from dicomflow.scanner.publish import Summary

#: Lines of detail shown per list in the summary (the rest is counted).
SHOWN = 20


def publish(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    tenant: Annotated[
        Optional[str],
        typer.Option("--tenant", "-t", help="Tenant of every file (default: each file's tenant tag, else storage.default_tenant)."),
    ] = None,
    copy_into_storage: Annotated[
        bool, typer.Option("--copy-into-storage", help="Copy the files into the storage layout first (else publish them where they are).")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Store events per Kafka batch.")] = 500,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Find DICOM files (by content, not by name) and publish their store events.

    Ends with a summary: published, skipped (with reasons) and failed. The
    exit code is 1 when any file failed, 2 on a configuration error.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomflow.errors import ConfigError
    from dicomflow.kafka.producer import Publisher
    from dicomflow.scanner.publish import FolderPublisher
    from dicomflow.scanner.walk import iter_files

    settings = settings_of(ctx)
    console = Console()
    errors = Console(stderr=True)
    files = list(iter_files(paths))
    try:
        publisher = Publisher(settings.kafka, settings.topics, client_id=f"dicomflow-publish-{settings.worker_node_id}")
        runner = FolderPublisher(settings, publisher, tenant=tenant, copy_into_storage=copy_into_storage,
                                 batch_size=batch_size)
    except ConfigError as exc:
        errors.print(f"configuration error: {exc}")
        raise typer.Exit(2) from exc
    try:
        with Progress(
            TextColumn("publishing"), BarColumn(), MofNCompleteColumn(), TextColumn("files"), TimeElapsedColumn(),
            console=errors, disable=not progress, transient=False,
        ) as bar:
            task = bar.add_task("publish", total=len(files))
            summary = runner.run(files, on_file=lambda _path: bar.advance(task))
    finally:
        publisher.close()
    print_summary(console, summary, runner.ingestor.root, copied=copy_into_storage)
    if not summary.ok:
        raise typer.Exit(1)


def print_summary(console: Console, summary: Summary, root: Path, *, copied: bool) -> None:
    """Published / skipped (grouped by reason) / failed, and a loud note about files outside the root."""
    from rich.table import Table

    table = Table(title="dicomflow publish", show_header=False)
    table.add_row("published", str(len(summary.published)))
    table.add_row("skipped", str(len(summary.skipped)))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("seconds", f"{summary.seconds:.1f}")
    console.print(table)
    if summary.skipped:
        console.print("[bold]skipped[/bold] (not published; retrying will not help):")
        for reason, count in summary.skipped_reasons().most_common():
            console.print(f"  {count:6d}  {reason}")
        for item in summary.skipped[:SHOWN]:
            console.print(f"    {item.path}: {item.reason}", highlight=False)
        if len(summary.skipped) > SHOWN:
            console.print(f"    ... and {len(summary.skipped) - SHOWN} more")
    if summary.failed:
        console.print("[bold red]failed[/bold red] (worth a retry once the cause is fixed):")
        for item in summary.failed[:SHOWN]:
            console.print(f"    {item.path}: {item.reason}", highlight=False)
        if len(summary.failed) > SHOWN:
            console.print(f"    ... and {len(summary.failed) - SHOWN} more")
    outside = summary.outside_root
    if outside and not copied:
        console.print(
            f"[bold yellow]warning:[/bold yellow] {len(outside)} published file(s) are outside the storage root "
            f"{root}: the consumer will refuse them (dead-letter topic). "
            "Publish again with --copy-into-storage, or move them under the root.",
            highlight=False,
        )
