"""``dicomflow publish PATH...``: publish store events for folders of DICOM files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dicomflow.cli.root import settings_of

if TYPE_CHECKING:
    from rich.console import Console

    from dicomflow.scanner.publish import NotPublished, Summary
    from dicomflow.settings import Settings

#: Lines of detail shown per list in the summary (the rest is counted).
SHOWN = 20


def publish(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively).")],
    tenant: Annotated[
        Optional[str],
        typer.Option("--tenant", "-t", help="Tenant of every file (default: each file's tenant tag, else storage.default_tenant)."),
    ] = None,
    no_copy: Annotated[
        bool,
        typer.Option(
            "--no-copy",
            help="Never copy: publish every file where it is. Only for files already under the storage root "
            "(put there by other means: rsync, a volume mounted under the root); a path outside the root is "
            "refused before anything is published (exit code 2).",
        ),
    ] = False,
    copy_into_storage: Annotated[
        bool,
        typer.Option("--copy-into-storage", help="Deprecated, the default now: accepted so existing scripts keep working."),
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Store events per Kafka batch.")] = 500,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    list_all: Annotated[
        bool, typer.Option("--list-all", help=f"List every refused, skipped and failed file (default: the first {SHOWN} of each).")
    ] = False,
) -> None:
    """Find DICOM files (by content, not by name) and publish their store events.

    Files outside the storage root are copied into it first (durably, in the
    storage layout, duplicates per ingest.duplicates); files already under it
    are published in place. A file the consumer could not index (unreadable,
    not DICOM, a UID missing or invalid) is refused, never published.

    Ends with a summary: published, refused (with reasons), skipped (stored
    already) and failed. Exit code 1 when a file failed or could not be read,
    2 on a configuration error or a --no-copy path outside the storage root.
    """
    from rich.console import Console

    from dicomflow.scanner.walk import iter_files

    settings = settings_of(ctx)
    console = Console()
    errors = Console(stderr=True, highlight=False)
    root = settings.storage.root.resolve()
    check_copy_options(errors, paths, root, no_copy=no_copy, copy_into_storage=copy_into_storage)
    files = list(iter_files(paths))
    summary = publish_files(settings, files, errors, tenant=tenant, no_copy=no_copy, batch_size=batch_size,
                            progress=progress)
    print_summary(console, summary, root, shown=None if list_all else SHOWN)
    if not summary.ok:
        raise typer.Exit(1)


def publish_files(settings: Settings, files: list[Path], errors: Console, *, tenant: str | None, no_copy: bool,
                  batch_size: int, progress: bool) -> Summary:
    """Publish ``files`` with one producer, a progress bar on ``errors`` unless ``progress`` is off.

    Raises:
        typer.Exit: code 2 on a configuration error, the message printed on ``errors``.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from dicomflow.errors import ConfigError
    from dicomflow.kafka.producer import Publisher
    from dicomflow.scanner.publish import FolderPublisher

    try:
        publisher = Publisher(settings.kafka, settings.topics, client_id=f"dicomflow-publish-{settings.worker_node_id}")
        runner = FolderPublisher(settings, publisher, tenant=tenant, copy_into_storage=not no_copy,
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
            return runner.run(files, on_file=lambda _path: bar.advance(task))
    finally:
        runner.close()
        publisher.close()


def check_copy_options(errors: Console, paths: list[Path], root: Path, *, no_copy: bool, copy_into_storage: bool) -> None:
    """Refuse contradicting flags, note the deprecated one, refuse ``--no-copy`` paths outside the root.

    Runs before the walk, any read or a Kafka connection: a refused run
    publishes nothing.

    Raises:
        typer.Exit: code 2, the message printed on ``errors``.
    """
    from dicomflow.scanner.decide import no_copy_refusal, outside_root

    if copy_into_storage:
        if no_copy:
            errors.print("configuration error: --copy-into-storage and --no-copy contradict each other")
            raise typer.Exit(2)
        errors.print("note: --copy-into-storage is deprecated: copying files from outside the storage root is the default now")
    if no_copy and (outside := outside_root(paths, root)):
        errors.print(no_copy_refusal(outside, root), soft_wrap=True)
        raise typer.Exit(2)


def print_summary(console: Console, summary: Summary, root: Path, *, shown: int | None = SHOWN) -> None:
    """Counts, then each list that is not empty: refused (grouped by reason), skipped, failed, with paths.

    ``shown``: paths listed per list (None: all); the rest are counted.
    """
    from rich.table import Table

    table = Table(title="dicomflow publish", show_header=False)
    table.add_row("published", str(len(summary.published)))
    table.add_row("copied", str(summary.copied))
    table.add_row("refused", str(len(summary.refused)))
    table.add_row("skipped", str(len(summary.skipped)))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("seconds", f"{summary.seconds:.1f}")
    console.print(table)
    if summary.copied:
        console.print(f"{summary.copied} file(s) copied into the storage root {root}", highlight=False, soft_wrap=True)
    if summary.refused:
        console.print("[bold]refused[/bold] (not published: the consumer would dead-letter them):")
        for reason, count in summary.refused_reasons().most_common():
            console.print(f"  {count:6d}  {reason}", highlight=False, soft_wrap=True)
        _details(console, summary.refused, shown)
        if any(r.retry for r in summary.refused):
            console.print("  files that could not be read: fix their permissions or links and publish them again")
    if summary.skipped:
        console.print("[bold]skipped[/bold] (stored already, see ingest.duplicates):")
        _details(console, summary.skipped, shown)
    if summary.failed:
        console.print("[bold red]failed[/bold red] (worth a retry once the cause is fixed):")
        _details(console, summary.failed, shown)


def _details(console: Console, items: list[NotPublished], shown: int | None) -> None:
    """Path and reason of the first ``shown`` items (None: all), the rest counted."""
    for item in items[:shown]:
        console.print(f"    {item.path}: {item.reason}", highlight=False, soft_wrap=True)  # one line each, for grep
    if shown is not None and len(items) > shown:
        console.print(f"    ... and {len(items) - shown} more (--list-all lists them)")
