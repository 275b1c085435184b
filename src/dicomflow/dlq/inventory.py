"""What is in the dead-letter topics: which topics, which letters, filtered, counted, shown.

The dead-letter topics are ``topics.dlq`` (the consumer's, ``storage_queue.dlq``
by default) and ``<topic>.dlq`` for each other topic dicomflow uses, where
such a topic exists on the cluster (the warehouse sink and the image workers
dead-letter to the ``.dlq`` of the topic they read). Letters are read from
the beginning of each partition to its end with ``assign`` and no commits
(:func:`dicomflow.kafka.scan.scan`), so reading them moves nobody's offsets.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dicomflow.dlq.exceptions import DlqError, LetterNotFoundError
from dicomflow.kafka.admin import list_cluster_topics
from dicomflow.kafka.dlq import Letter, letter_from_record, parse_letter_id
from dicomflow.kafka.exceptions import TopicAdminError
from dicomflow.kafka.scan import read_at, scan
from dicomflow.settings import KafkaSettings, TopicSettings

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def candidate_topics(topics: TopicSettings) -> list[str]:
    """Every dead-letter topic dicomflow may write: ``topics.dlq`` first, then ``<topic>.dlq`` of the others."""
    out = [topics.dlq]
    for t in topics.all():
        if not t.endswith(".dlq") and f"{t}.dlq" not in out:
            out.append(f"{t}.dlq")
    return out


def dlq_topics(kafka: KafkaSettings, topics: TopicSettings, only: str | None = None, *, timeout_s: float = 30.0) -> list[str]:
    """The dead-letter topics that exist on the cluster (``only``: just that one, which must exist).

    Raises:
        DlqError: ``only`` does not exist, or the brokers do not answer.
    """
    try:
        present = set(list_cluster_topics(kafka, timeout_s=timeout_s))
    except TopicAdminError as exc:
        raise DlqError(str(exc)) from exc
    if only is not None:
        if only not in present:
            raise DlqError(f"dead-letter topic {only} does not exist on {kafka.brokers}")
        return [only]
    return [t for t in candidate_topics(topics) if t in present]


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an ISO date / datetime.

    A date or datetime without a zone is local time. The result is aware.

    Raises:
        DlqError: neither form.
    """
    current = (now or dt.datetime.now()).astimezone()
    m = _DURATION.match(text)
    if m:
        return current - dt.timedelta(seconds=float(m.group(1)) * _UNIT_S[m.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise DlqError(f"--since {text!r}: expected a duration (30m, 2h, 7d) or an ISO date/time (2025-01-31T08:00)") from exc
    return when.astimezone() if when.tzinfo is None else when


@dataclass(frozen=True)
class LetterFilter:
    """Which letters an operation is about; empty fields match everything."""

    error_class: str | None = None
    since: dt.datetime | None = None
    ids: frozenset[str] = field(default_factory=frozenset)

    def matches(self, letter: Letter) -> bool:
        if self.ids and letter.id not in self.ids:
            return False
        if self.error_class is not None and letter.error_class != self.error_class:
            return False
        if self.since is not None:
            when = letter.time
            if when is None or when < self.since:
                return False
        return True


@dataclass(frozen=True)
class Inventory:
    """The letters of some dead-letter topics, matching a filter, in topic / partition / offset order."""

    topics: tuple[str, ...]
    letters: tuple[Letter, ...]

    def counts(self) -> dict[str, int]:
        """Letters per error class, most frequent first."""
        return dict(Counter(letter.error_class for letter in self.letters).most_common())


def load_letters(kafka: KafkaSettings, topics: Sequence[str], selection: LetterFilter | None = None,
                 *, timeout_s: float = 60.0) -> Inventory:
    """Read every letter of ``topics`` and keep those ``selection`` matches.

    With IDs in the selection, only their topics are read, and an ID that
    names no letter is an error (so a typo is not a silent no-op).

    Raises:
        DlqError: a topic cannot be read to its end, or an ID matched nothing.
    """
    selection = selection or LetterFilter()
    wanted = list(topics)
    if selection.ids:
        id_topics = {parse_id(i)[0] for i in selection.ids}
        wanted = [t for t in wanted if t in id_topics] + sorted(id_topics - set(wanted))
    try:
        records = scan(kafka, wanted, timeout_s=timeout_s)
    except TopicAdminError as exc:
        raise DlqError(str(exc)) from exc
    letters = tuple(letter for letter in map(letter_from_record, records) if selection.matches(letter))
    missing = selection.ids - {letter.id for letter in letters}
    if missing and selection.error_class is None and selection.since is None:
        raise LetterNotFoundError(f"no dead letter {', '.join(sorted(missing))}")
    return Inventory(tuple(wanted), letters)


def parse_id(text: str) -> tuple[str, int, int]:
    """(topic, partition, offset) of a letter ID, or a :class:`DlqError` saying what is expected."""
    try:
        return parse_letter_id(text)
    except ValueError as exc:
        raise DlqError(str(exc)) from exc


def show(kafka: KafkaSettings, letter_id: str, *, timeout_s: float = 15.0) -> Letter:
    """The letter with this ID.

    Raises:
        DlqError: a malformed ID, or the topic cannot be read.
        LetterNotFoundError: nothing at those coordinates (deleted by retention?).
    """
    topic, partition, offset = parse_id(letter_id)
    try:
        record = read_at(kafka, topic, partition, offset, timeout_s=timeout_s)
    except TopicAdminError as exc:
        raise DlqError(str(exc)) from exc
    if record is None:
        raise LetterNotFoundError(f"no dead letter {letter_id} on {kafka.brokers} (wrong ID, or removed by retention)")
    return letter_from_record(record)


def pretty_payload(value: bytes | None, limit: int = 20000) -> str:
    """The original message for a reader: indented JSON when it is JSON, else text, else a hex dump."""
    if not value:
        return "(empty)"
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        shown = value[:limit // 3]
        rows = (f"{i:08x}  {shown[i:i + 16].hex(' ')}" for i in range(0, len(shown), 16))
        more = f"\n… {len(value) - len(shown)} more byte(s)" if len(value) > len(shown) else ""
        return "\n".join(rows) + more
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        pass
    return text if len(text) <= limit else text[:limit] + f"\n… {len(text) - limit} more character(s)"


def letter_summary(letter: Letter) -> dict[str, object]:
    """One letter as plain data (``--json``)."""
    r = letter.record
    when = letter.time
    return {
        "id": letter.id,
        "error_class": letter.error_class,
        "reason": letter.reason,
        "key": r.key.decode("utf-8", "replace") if r.key is not None else None,
        "source_topic": letter.source_topic,
        "source_partition": letter.source_partition,
        "source_offset": letter.source_offset,
        "dead_lettered_at": when.isoformat(timespec="seconds") if when else letter.dead_lettered_at,
        "worker_node_id": letter.worker_node_id,
        "size": len(r.value or b""),
    }


def ids_of(letters: Iterable[Letter]) -> list[str]:
    return [letter.id for letter in letters]


__all__ = [
    "Inventory",
    "LetterFilter",
    "candidate_topics",
    "dlq_topics",
    "ids_of",
    "letter_summary",
    "load_letters",
    "parse_id",
    "parse_since",
    "pretty_payload",
    "show",
]
