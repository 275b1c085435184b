"""``dicomflow dlq list | show | redrive``: the operator's dead-letter tools."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from dicomflow.cli.root import settings_of
from dicomflow.cli.tables import Col, make_console, print_table

if TYPE_CHECKING:
    from collections.abc import Mapping

    from dicomflow.dlq import Inventory, LetterFilter
    from dicomflow.settings import Settings

app = typer.Typer(help="List, inspect and re-drive dead letters (messages the pipeline could not process).",
                  no_args_is_help=True)

_TOPIC = typer.Option("--topic", "-t", help="Only this dead-letter topic (default: every one dicomflow knows).")
_CLASS = typer.Option("--class", "-C", help="Only letters of this error class (file-missing, wire-format ...).")
_SINCE = typer.Option("--since", help="Only letters dead-lettered since: a duration back (30m, 2h, 7d) or an ISO date/time.")
_JSON = typer.Option("--json", help="Print JSON instead of tables.")
_TIMEOUT = typer.Option("--timeout", help="Seconds to wait for the brokers.")


def _fail(what: str, exc: Exception) -> typer.Exit:
    typer.echo(f"dlq {what} failed: {exc}", err=True)
    return typer.Exit(1)


def _filter(class_: str | None, since: str | None, ids: list[str] | None = None) -> LetterFilter:
    from dicomflow.dlq import LetterFilter, parse_since

    return LetterFilter(error_class=class_, since=parse_since(since) if since else None, ids=frozenset(ids or ()))


@app.command("list")
def list_(
    ctx: typer.Context,
    topic: Annotated[Optional[str], _TOPIC] = None,
    class_: Annotated[Optional[str], _CLASS] = None,
    since: Annotated[Optional[str], _SINCE] = None,
    as_json: Annotated[bool, _JSON] = False,
    timeout: Annotated[float, _TIMEOUT] = 60.0,
) -> None:
    """Counts by error class, then every letter: ID, key, source topic[partition]@offset, time, reason."""
    from dicomflow.dlq import DlqError, dlq_topics, ledger_entries, load_letters
    from dicomflow.dlq.inventory import letter_summary

    settings = settings_of(ctx)
    try:
        names = dlq_topics(settings.kafka, settings.topics, topic, timeout_s=timeout)
        inventory = load_letters(settings.kafka, names, _filter(class_, since), timeout_s=timeout)
        done = ledger_entries(settings.kafka, settings.topics, timeout_s=timeout)
    except DlqError as exc:
        raise _fail("list", exc) from exc
    if as_json:
        letters = [{**letter_summary(x), "redriven": x.id in done} for x in inventory.letters]
        typer.echo(json.dumps({"topics": list(inventory.topics), "counts": inventory.counts(), "letters": letters},
                              indent=2, ensure_ascii=False))
        return
    _print_inventory(inventory, done)


def _print_inventory(inventory: Inventory, done: Mapping[str, object]) -> None:
    """The counts by error class, then every letter (identifiers never cut: :mod:`dicomflow.cli.tables`)."""
    from dicomflow.dlq.inventory import letter_summary

    console = make_console()
    print_table(
        f"dead letters in {', '.join(inventory.topics) or '(no dead-letter topic yet)'}",
        (Col("error class", "id"), Col("letters", "number"), Col("not re-driven", "number")),
        ([error_class, str(n), str(sum(1 for x in inventory.letters if x.error_class == error_class and x.id not in done))]
         for error_class, n in inventory.counts().items()),
        console,
    )
    rows = []
    for x in inventory.letters:
        s = letter_summary(x)
        rows.append([x.id, str(s["key"] or "-"), x.source, str(s["dead_lettered_at"] or "-"), x.error_class,
                     "yes" if x.id in done else "", x.reason])
    print_table("letters", (Col("ID", "id"), Col("key", "id"), Col("source", "id"), Col("dead-lettered", "id"),
                            Col("class", "id"), Col("re-driven"), Col("reason")), rows, console)
    console.print(f"{len(inventory.letters)} letter(s), {sum(1 for x in inventory.letters if x.id not in done)} not re-driven")


@app.command("show")
def show(
    ctx: typer.Context,
    letter_id: Annotated[str, typer.Argument(metavar="ID", help="<dlq-topic>:<partition>:<offset>, as `dlq list` prints it.")],
    as_json: Annotated[bool, _JSON] = False,
    timeout: Annotated[float, _TIMEOUT] = 15.0,
) -> None:
    """One letter: its headers, the reason, and the original payload pretty-printed."""
    from dicomflow.dlq import DlqError, ledger_entries, pretty_payload
    from dicomflow.dlq import show as show_letter
    from dicomflow.dlq.inventory import letter_summary

    settings = settings_of(ctx)
    try:
        letter = show_letter(settings.kafka, letter_id, timeout_s=timeout)
        entry = ledger_entries(settings.kafka, settings.topics, timeout_s=timeout).get(letter.id)
    except DlqError as exc:
        raise _fail("show", exc) from exc
    headers = [(k, v.decode("utf-8", "replace")) for k, v in letter.record.headers]
    if as_json:
        payload: object
        try:
            payload = json.loads(letter.record.value or b"")
        except ValueError:
            payload = (letter.record.value or b"").decode("utf-8", "replace")
        out = {**letter_summary(letter), "headers": headers, "payload": payload,
               "redriven": None if entry is None else {"at": entry.redriven_at.isoformat(), "to": entry.target_topic,
                                                       "by": entry.node_id, "operator": entry.operator}}
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
        return
    console = make_console()
    console.print(f"[bold]{letter.id}[/bold]  {letter.error_class}: {letter.reason}")
    console.print(f"from {letter.source}; "
                  + ("not re-driven" if entry is None else
                     f"re-driven to {entry.target_topic} at {entry.redriven_at.isoformat(timespec='seconds')} by {entry.node_id}"))
    print_table("headers", (Col("name", "id"), Col("value", "id")), headers, console)
    console.print("original payload:")
    console.print(pretty_payload(letter.record.value), markup=False, highlight=False)


@app.command("redrive")
def redrive(
    ctx: typer.Context,
    class_: Annotated[Optional[str], _CLASS] = None,
    ids: Annotated[Optional[list[str]], typer.Option("--id", help="A letter ID (repeatable).")] = None,
    topic: Annotated[Optional[str], _TOPIC] = None,
    since: Annotated[Optional[str], _SINCE] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be re-driven; publish nothing.")] = False,
    operator: Annotated[Optional[str], typer.Option("--operator", help="Who re-drives (recorded in the audit event).")] = None,
    as_json: Annotated[bool, _JSON] = False,
    timeout: Annotated[float, _TIMEOUT] = 60.0,
) -> None:
    """Publish letters' original key and bytes back to their source topic, each at most once.

    Fix the cause first (restore the file ...). Letters already re-driven are
    skipped; every re-drive is recorded in the ledger topic and audited.
    """
    if not class_ and not ids:
        typer.echo("dlq redrive: say which letters: --class C or --id ID (repeatable)", err=True)
        raise typer.Exit(2)
    from dicomflow.dlq import DlqError, dlq_topics, load_letters
    from dicomflow.dlq import redrive as redrive_letters
    from dicomflow.errors import PublishError

    settings = settings_of(ctx)
    try:
        names = dlq_topics(settings.kafka, settings.topics, topic, timeout_s=timeout)
        inventory = load_letters(settings.kafka, names, _filter(class_, since, ids), timeout_s=timeout)
        report = redrive_letters(settings.kafka, settings.topics, inventory.letters, node_id=settings.worker_node_id,
                                 default_tenant=settings.storage.default_tenant, dry_run=dry_run, operator=operator,
                                 timeout_s=timeout)
    except (DlqError, PublishError) as exc:
        raise _fail("redrive", exc) from exc
    _print_report(settings, report, as_json)


def _print_report(settings: Settings, report: object, as_json: bool) -> None:
    from dicomflow.dlq import RedriveReport

    assert isinstance(report, RedriveReport)
    if as_json:
        typer.echo(json.dumps({
            "dry_run": report.dry_run,
            "outcomes": [{"id": o.letter.id, "outcome": o.outcome, "target_topic": o.target_topic, "detail": o.detail}
                         for o in report.outcomes],
        }, indent=2))
        return
    console = make_console()
    print_table(("dry run: " if report.dry_run else "") + f"re-drive on {settings.kafka.brokers}",
                (Col("ID", "id"), Col("class", "id"), Col("outcome", "id"), Col("to", "id"), Col("detail")),
                ([o.letter.id, o.letter.error_class, o.outcome, o.target_topic or "-", o.detail] for o in report.outcomes),
                console)
    if report.dry_run:
        console.print(f"dry run: {report.count('would-redrive')} would be re-driven, "
                      f"{report.count('already-redriven')} already were; nothing published")
    else:
        console.print(f"{report.count('redriven')} re-driven, {report.count('already-redriven')} already re-driven before, "
                      f"{report.count('no-source')} without a source topic")
