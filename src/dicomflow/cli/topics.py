"""``dicomflow topics create | list``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from dicomflow.cli.root import settings_of
from dicomflow.cli.tables import Col, print_json, print_table

if TYPE_CHECKING:
    from dicomflow.kafka.admin import TopicInfo, TopicOutcome

app = typer.Typer(help="Create and list the Kafka topics dicomflow uses.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the broker."),
) -> None:
    """Create every dicomflow topic that is missing (data, audit, dead-letter); existing ones are left as they are."""
    from dicomflow.kafka.admin import create_topics
    from dicomflow.kafka.exceptions import TopicAdminError

    settings = settings_of(ctx)
    try:
        outcomes = create_topics(settings.kafka, settings.topics, timeout_s=timeout)
    except TopicAdminError as exc:
        typer.echo(f"topics create failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    _print_outcomes(outcomes, settings.kafka.brokers)


@app.command("list")
def list_(
    ctx: typer.Context,
    all_topics: bool = typer.Option(False, "--all", help="Also list topics dicomflow does not use."),
    timeout: float = typer.Option(30.0, "--timeout", help="Seconds to wait for the broker."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (keys in docs/operations.md) instead of a table."),
) -> None:
    """Show dicomflow's topics with their partitions, replication, min ISR and retention."""
    from dicomflow.kafka.admin import describe_topics, list_cluster_topics
    from dicomflow.kafka.exceptions import TopicAdminError

    settings = settings_of(ctx)
    names = list(settings.topics.all())
    try:
        if all_topics:
            names += [t for t in list_cluster_topics(settings.kafka, timeout_s=timeout) if t not in names]
        infos = describe_topics(settings.kafka, names, timeout_s=timeout)
    except TopicAdminError as exc:
        typer.echo(f"topics list failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    ours = set(settings.topics.all())
    if as_json:
        print_json(infos_json(infos, settings.kafka.brokers, ours))
    else:
        _print_infos(infos, settings.kafka.brokers, ours)


def _retention(ms: int | None) -> str:
    if ms is None:
        return "-"
    if ms < 0:
        return "forever"
    if ms % 86_400_000 == 0:
        return f"{ms // 86_400_000} d"
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000} h"
    return f"{ms} ms"


def infos_json(infos: list[TopicInfo], brokers: str, ours: set[str]) -> dict[str, object]:
    """``topics list --json``: the brokers asked and one object per topic (None where the broker said nothing)."""
    return {
        "brokers": brokers,
        "topics": [
            {"name": t.name, "exists": t.exists, "partitions": t.partitions,
             "replication_factor": t.replication_factor, "min_insync_replicas": t.min_insync_replicas,
             "retention_ms": t.retention_ms, "used_by_dicomflow": t.name in ours}
            for t in infos
        ],
    }


_NUMBERS = (Col("partitions", "number"), Col("replication", "number"), Col("min ISR", "number"), Col("retention"))


def _print_outcomes(outcomes: list[TopicOutcome], brokers: str) -> None:
    print_table(
        f"dicomflow topics on {brokers}",
        (Col("topic", "id"), Col("action"), *_NUMBERS, Col("differs from settings")),
        ([o.name, o.action, str(o.partitions), str(o.replication_factor), str(o.min_insync_replicas or "-"),
          _retention(o.retention_ms), "; ".join(o.drift) or "-"] for o in outcomes),
    )


def _print_infos(infos: list[TopicInfo], brokers: str, ours: set[str]) -> None:
    print_table(
        f"topics on {brokers}",
        (Col("topic", "id"), *_NUMBERS, Col("used by dicomflow")),
        ([t.name, str(t.partitions) if t.exists else "missing", str(t.replication_factor or "-"),
          str(t.min_insync_replicas or "-"), _retention(t.retention_ms), "yes" if t.name in ours else ""]
         for t in infos),
    )
