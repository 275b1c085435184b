"""``dicomflow images``: thumbnails and transcoded copies from dicom_image_queue, until SIGTERM / SIGINT."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of


def images(
    ctx: typer.Context,
    max_messages: Annotated[
        Optional[int], typer.Option("--max-messages", min=1, help="Exit after committing this many events.")
    ] = None,
    until_idle: Annotated[
        Optional[float],
        typer.Option("--until-idle", min=0.0,
                     help="Exit after this many seconds without a new event (counted while partitions are assigned)."),
    ] = None,
    metrics_port: Annotated[
        Optional[int], typer.Option("--metrics-port", min=0, max=65535, help="Serve /metrics and /healthz here (0: off).")
    ] = None,
) -> None:
    """Pre-render series thumbnails and transcode NeedTransfer instances to their target syntax.

    Consumes dicom_image_queue in the group images.group_id; writes the
    outputs under each series folder's .served/, their locations and the
    receipts' transfer_status in PostgreSQL, republishes the updated
    instance events, dead-letters undecodable pixel data to
    dicom_image_queue.dlq, then commits. SIGTERM finishes the batch first.
    """
    from prometheus_client import CollectorRegistry
    from rich.console import Console

    from dicomflow.cli.stopping import stop_on_signals
    from dicomflow.images.worker import ImageWorker, Summary
    from dicomflow.kafka.admin import create_topics
    from dicomflow.metrics.health import Health, postgres_probe
    from dicomflow.metrics.images import ImagesMetrics
    from dicomflow.metrics.server import MetricsServer

    settings = settings_of(ctx)
    registry = CollectorRegistry()
    health = Health()
    health.add_probe("postgres", postgres_probe(settings.database))
    port = settings.metrics.port if metrics_port is None else metrics_port
    server = MetricsServer(settings.metrics.host, port, registry, health).start() if port else None
    console = Console(stderr=True)
    create_topics(settings.kafka, settings.topics)  # dicom_image_queue.dlq among them, when missing
    stop = stop_on_signals()
    with console.status("images: waiting for instance events") as status:

        def progress(s: Summary) -> None:
            status.update(f"images: {s.consumed} events, {s.thumbnails} thumbnails, {s.transcoded} transcoded, "
                          f"{s.dead_lettered} dead-lettered")

        worker = ImageWorker(settings, ImagesMetrics(registry), max_messages=max_messages,
                             until_idle_s=until_idle, on_batch=progress, health=health, stop=stop)
        try:
            summary = worker.run()
        finally:
            if server is not None:
                server.stop()
    console.print(
        f"images: {summary.consumed} events in {summary.batches} batches: {summary.thumbnails} thumbnails, "
        f"{summary.transcoded} transcoded, {summary.republished} republished, {summary.dead_lettered} "
        f"dead-lettered, {summary.skipped} skipped; {summary.stopped_because}"
    )
