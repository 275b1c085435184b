"""``dicomflow consume``: storage_queue → PostgreSQL + derived events, until SIGTERM/SIGINT."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of
from dicomflow.settings import Settings


def consume(
    ctx: typer.Context,
    max_messages: Annotated[
        Optional[int], typer.Option("--max-messages", min=1, help="Exit after committing this many messages.")
    ] = None,
    until_idle: Annotated[
        Optional[float],
        typer.Option("--until-idle", min=0.0,
                     help="Exit after this many seconds without a new message (counted while partitions are assigned)."),
    ] = None,
    batch_max_messages: Annotated[
        Optional[int],
        typer.Option("--batch-max-messages", "--max-messages-per-batch", min=1,
                     help="Messages per batch (default: consumer.batch_max_messages, 500)."),
    ] = None,
    batch_max_ms: Annotated[
        Optional[int],
        typer.Option("--batch-max-ms", "--max-time-between-batches-ms", min=1,
                     help="Longest wait for a batch to fill, in ms (default: consumer.batch_max_ms, 500)."),
    ] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=0, help="Parse processes (0: one per core).")
    ] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics and /healthz here (0: off).")
    ] = None,
) -> None:
    """Consume store events: parse headers, write PostgreSQL, publish state and instance events, commit.

    Runs until SIGTERM or SIGINT (the batch in hand is finished and
    committed first), or until --max-messages / --until-idle say so.
    Poison messages go to the dead-letter topic with their reason.
    """
    import logging

    from dicomflow.cli.stopping import stop_on_signals
    from dicomflow.errors import ConfigError, ConsumerError
    from dicomflow.pipeline.service import ConsumerService

    settings = _with_options(settings_of(ctx), batch_max_messages, batch_max_ms, workers, metrics_port)
    stop = stop_on_signals()
    try:
        service = ConsumerService(settings, max_messages=max_messages, until_idle_s=until_idle, stop=stop)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        summary = service.run()
    except ConsumerError as exc:
        logging.getLogger("dicomflow.pipeline").error("consumer failed: %s", exc)
        raise typer.Exit(1) from exc
    typer.echo(
        f"consumed {summary.consumed}, committed {summary.committed_records} "
        f"({summary.instances} instances, {summary.dead_lettered} dead-lettered) in {summary.batches} batches, "
        f"{summary.retries} retries; {summary.stopped_because}",
        err=True,
    )


def _with_options(settings: Settings, batch_max_messages: int | None, batch_max_ms: int | None,
                  workers: int | None, metrics_port: int | None) -> Settings:
    """The settings with the command line's overrides."""
    consumer = dataclasses.replace(
        settings.consumer,
        **{k: v for k, v in (("batch_max_messages", batch_max_messages), ("batch_max_ms", batch_max_ms),
                             ("parse_workers", workers)) if v is not None},
    )
    metrics = settings.metrics if metrics_port is None else dataclasses.replace(settings.metrics, port=metrics_port)
    return dataclasses.replace(settings, consumer=consumer, metrics=metrics)
