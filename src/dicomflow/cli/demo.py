"""``dicomflow demo``: the end-to-end demonstration behind ``scripts/demo.sh`` (the run is :mod:`dicomflow.demo`)."""

from __future__ import annotations

import typer

from dicomflow.cli.root import settings_of


def demo(
    ctx: typer.Context,
    instances: int = typer.Option(480, "--instances", min=1, help="How many instances to send."),
    studies: int = typer.Option(4, "--studies", min=1, help="Across how many studies."),
    series_per_study: int = typer.Option(3, "--series-per-study", min=1, help="Series per study."),
    associations: int = typer.Option(4, "--associations", min=1, max=16, help="Parallel C-STORE associations."),
    timeout_s: float = typer.Option(180.0, "--timeout", help="Give up waiting for PostgreSQL after this many seconds."),
    s3: bool = typer.Option(False, "--s3", help="Store the instances in S3: the stack with S3Proxy (stack up --s3), "
                                                "storage.backend = s3 for every stage; says where the objects are."),
) -> None:
    """Run the whole pipeline on sample DICOM and print what it did."""
    from dicomflow.demo import run_demo
    from dicomflow.errors import StackError

    try:
        code = run_demo(settings_of(ctx), instances, studies, series_per_study, associations, timeout_s, s3=s3)
    except StackError as exc:
        typer.echo(f"demo: {exc}", err=True)
        raise typer.Exit(1) from exc
    raise typer.Exit(code)
