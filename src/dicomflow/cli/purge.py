"""``dicomflow purge``: change events to dicom_change_queue, and the objects of deleted instances removed."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of


def purge(
    ctx: typer.Context,
    until_idle: Annotated[
        Optional[float],
        typer.Option("--until-idle", min=0.0, help="Exit after this many seconds with nothing to publish or purge."),
    ] = None,
) -> None:
    """Publish the change log to dicom_change_queue and purge the objects of deleted instances.

    Runs until SIGTERM or SIGINT (the round in hand finishes), or --until-idle.
    Objects of a delete are purged once [lifecycle] purge_delay has passed.
    """
    from dicomflow.cli.stopping import stop_on_signals
    from dicomflow.lifecycle import LifecycleWorker

    worker = LifecycleWorker(settings_of(ctx), stop=stop_on_signals())
    result = worker.run(until_idle_s=until_idle)
    typer.echo(f"published {result.published} change events, purged {result.purged} deleted instances"
               + (f" ({result.failures} failed rounds retried)" if result.failures else ""))
