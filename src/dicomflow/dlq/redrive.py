"""Re-driving dead letters: the original key and bytes back to their source topic, at most once each.

Once the cause of a dead letter is fixed (a missing file restored, a bad
value corrected upstream), :func:`redrive` publishes the letter's original
key, bytes and headers to the topic it came from; the consumer processes it
like any new message (indexed, or dead-lettered again with a fresh reason).

**Once per letter.** Every re-drive is recorded in a compacted Kafka topic,
the *ledger* (``topics.redrive_ledger``, ``dicomflow.dlq.redriven`` by
default; key: the letter ID, value: when, by whom, to where). The re-driven
message, its ledger entry and its audit event are written in **one Kafka
transaction** (:mod:`dicomflow.kafka.transaction`), so either all three are
visible or none is: a crash between "published" and "recorded" cannot
happen. Every re-drive uses the same ``transactional.id`` (derived from the
ledger's name), and the ledger is read *after* the transactional producer
registered: that fences any concurrent re-drive (its commit fails) and
completes any transaction a crashed one left, so the ledger read is
complete and a letter already in it is skipped. Hence "re-driven twice,
published once", across processes and crashes.

Why Kafka and not a PostgreSQL table: the re-drive writes only to Kafka,
and a table could not be committed atomically with the Kafka writes (a crash
between the two would publish twice or record a re-drive that never
happened). The ledger is compacted, so it keeps one entry per letter for as
long as the letters themselves matter.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import msgspec

from dicomflow.audit.dead_letters import message_context
from dicomflow.audit.events import redriven
from dicomflow.dlq.exceptions import DlqError
from dicomflow.kafka.admin import admin_client, list_cluster_topics
from dicomflow.kafka.dlq import HEADER_REDRIVEN_FROM, Letter
from dicomflow.kafka.exceptions import TopicAdminError
from dicomflow.kafka.scan import scan
from dicomflow.kafka.transaction import TransactionalSender, TransactionError, TxMessage
from dicomflow.models import encode, now, truncate_utf8
from dicomflow.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

#: Letters per transaction: a re-drive of thousands commits in steps, each step whole.
CHUNK = 500


class LedgerEntry(msgspec.Struct, kw_only=True):
    """One re-drive, as the ledger records it (JSON value, key = ``letter``)."""

    letter: str
    target_topic: str
    error_class: str
    redriven_at: dt.datetime
    node_id: str
    operator: str | None = None


_ledger_decoder = msgspec.json.Decoder(LedgerEntry)

Outcome = Literal["redriven", "would-redrive", "already-redriven", "no-source"]


@dataclass(frozen=True)
class RedriveOutcome:
    """What happened to one letter."""

    letter: Letter
    outcome: Outcome
    target_topic: str | None
    detail: str = ""


@dataclass(frozen=True)
class RedriveReport:
    outcomes: tuple[RedriveOutcome, ...]
    dry_run: bool

    def count(self, outcome: Outcome) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)


def transactional_id(topics: TopicSettings) -> str:
    """The one transactional id every re-drive against this ledger uses (see the module docstring)."""
    return f"dicomflow-redrive-{topics.redrive_ledger}"


def ensure_ledger(kafka: KafkaSettings, topics: TopicSettings, *, timeout_s: float = 30.0) -> None:
    """Create the compacted ledger topic when it is missing (one partition: it is small).

    Raises:
        DlqError: the brokers refused or did not answer.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    name = topics.redrive_ledger
    try:
        if name in list_cluster_topics(kafka, timeout_s=timeout_s):
            return
    except TopicAdminError as exc:
        raise DlqError(str(exc)) from exc
    rf = topics.replication_factor or -1  # 0: the cluster's default.replication.factor
    config = {"cleanup.policy": "compact"}
    if topics.min_insync_replicas:
        config["min.insync.replicas"] = str(topics.min_insync_replicas)
    admin = admin_client(kafka)
    future = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=rf, config=config)],
                                 request_timeout=timeout_s)[name]
    try:
        future.result(timeout=timeout_s)
        log.info("created the re-drive ledger topic %s (compacted)", name)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
            return
        raise DlqError(f"cannot create the re-drive ledger topic {name} on {kafka.brokers}: {exc}") from exc


def ledger_entries(kafka: KafkaSettings, topics: TopicSettings, *, timeout_s: float = 60.0) -> dict[str, LedgerEntry]:
    """Every re-drive recorded so far, by letter ID (empty when the ledger does not exist yet).

    Only committed transactions are read, so a re-drive that crashed half-way
    is not in it (and none of its messages is visible either).

    Raises:
        DlqError: the ledger cannot be read to its end.
    """
    name = topics.redrive_ledger
    try:
        if name not in list_cluster_topics(kafka, timeout_s=timeout_s):
            return {}
        records = scan(kafka, [name], timeout_s=timeout_s)
    except TopicAdminError as exc:
        raise DlqError(str(exc)) from exc
    out: dict[str, LedgerEntry] = {}
    for r in records:
        try:
            entry = _ledger_decoder.decode(r.value or b"")
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("%s: unreadable ledger entry, ignored", r.source)
            continue
        out[entry.letter] = entry
    return out


def redrive(
    kafka: KafkaSettings,
    topics: TopicSettings,
    letters: Sequence[Letter],
    *,
    node_id: str,
    default_tenant: str,
    dry_run: bool = False,
    operator: str | None = None,
    timeout_s: float = 60.0,
) -> RedriveReport:
    """Publish each letter's original message back to its source topic, unless already done.

    ``dry_run`` reads the ledger and says what would be re-driven; it
    publishes nothing and creates nothing.

    Raises:
        DlqError: the ledger cannot be created or read.
        TransactionError: a transaction failed; the letters of that step (and
            the later ones) were not re-driven and are not in the ledger, so
            running the command again finishes the job.
    """
    sender: TransactionalSender | None = None
    if not dry_run:
        ensure_ledger(kafka, topics, timeout_s=timeout_s)
        sender = TransactionalSender(kafka, transactional_id(topics), timeout_s=timeout_s)
        sender.open()  # fence any concurrent re-drive before reading the ledger
    try:
        done = ledger_entries(kafka, topics, timeout_s=timeout_s)
        outcomes: list[RedriveOutcome] = []
        todo: list[Letter] = []
        for letter in letters:
            if letter.id in done:
                entry = done[letter.id]
                outcomes.append(RedriveOutcome(letter, "already-redriven", entry.target_topic,
                                               f"re-driven {entry.redriven_at.isoformat(timespec='seconds')} by {entry.node_id}"))
            elif not letter.source_topic:
                outcomes.append(RedriveOutcome(letter, "no-source", None, "the letter has no dicomflow.source.topic header"))
            elif dry_run:
                outcomes.append(RedriveOutcome(letter, "would-redrive", letter.source_topic))
            else:
                todo.append(letter)
        if sender is not None:
            for start in range(0, len(todo), CHUNK):
                step = todo[start:start + CHUNK]
                sender.send([m for letter in step for m in _messages(letter, topics, node_id, default_tenant, operator)])
                for letter in step:
                    log.info("re-drove %s to %s (%s)", letter.id, letter.source_topic, letter.error_class)
                    outcomes.append(RedriveOutcome(letter, "redriven", letter.source_topic))
        order = {letter.id: i for i, letter in enumerate(letters)}
        outcomes.sort(key=lambda o: order[o.letter.id])
        return RedriveReport(tuple(outcomes), dry_run)
    finally:
        if sender is not None:
            sender.close()


def _messages(letter: Letter, topics: TopicSettings, node_id: str, default_tenant: str,
              operator: str | None) -> list[TxMessage]:
    """The three writes of one re-drive: the original message, its ledger entry, its audit event."""
    r = letter.record
    target = letter.source_topic or ""
    headers: list[tuple[str, str | bytes | None]] = [*letter.original_headers, (HEADER_REDRIVEN_FROM, letter.id.encode())]
    when = now()
    entry = LedgerEntry(letter=letter.id, target_topic=target, error_class=letter.error_class, redriven_at=when,
                        node_id=node_id, operator=operator)
    ctx = message_context(r.value)
    audit = redriven(
        node_id=node_id,
        tenant_id=truncate_utf8(ctx.tenant_id, 64) if ctx.tenant_id else default_tenant,
        letter=letter.id,
        source=letter.source,
        target=target,
        error_class=letter.error_class,
        operator=operator,
        study_uid=ctx.study_uid,
        sop_uid=ctx.sop_uid,
        when=when,
    )
    return [
        (target, r.key, r.value or b"", headers),
        (topics.redrive_ledger, letter.id, encode(entry), None),
        (topics.audit, audit.key(), encode(audit), None),
    ]


__all__ = [
    "CHUNK",
    "LedgerEntry",
    "RedriveOutcome",
    "RedriveReport",
    "TransactionError",
    "ensure_ledger",
    "ledger_entries",
    "redrive",
    "transactional_id",
]
