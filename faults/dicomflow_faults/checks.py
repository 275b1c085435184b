"""What the suite asserts after each phase, read from PostgreSQL and Kafka themselves.

Nothing here trusts a component's own counters: rows are counted in
PostgreSQL, dead letters are read back from the DLQ topic, consumer
progress is the group's committed offsets against the topic's end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from dicomflow.settings import DatabaseSettings, KafkaSettings, TopicSettings

log = logging.getLogger(__name__)

#: Header names of a dead letter (see dicomflow.kafka.dlq).
HEADER_ERROR_CLASS = "dicomflow.error.class"
HEADER_REASON = "dicomflow.error.reason"


@dataclass(frozen=True)
class Check:
    """One named verdict, with the figures behind it."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class DeadLetter:
    """One message read back from the dead-letter topic."""

    key: bytes | None
    value: bytes
    error_class: str
    reason: str
    sop_uid: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RowSummary:
    """The instance rows of one phase's database."""

    sop_uids: set[str] = field(default_factory=set)
    #: SOP Instance UIDs with more than one row, and their row counts.
    duplicates: dict[str, int] = field(default_factory=dict)
    #: (series_uid, series_related_instances, actual instance rows) where they differ.
    series_mismatches: list[tuple[str, int | None, int]] = field(default_factory=list)
    series_rows: int = 0
    receipt_rows: int = 0

    @property
    def duplicate_rows(self) -> int:
        return sum(n - 1 for n in self.duplicates.values())


def _connect(db: DatabaseSettings) -> Any:
    import psycopg

    return psycopg.connect(db.conninfo(), connect_timeout=3)


def count_rows(db: DatabaseSettings) -> int | None:
    """Instance rows right now, or None while PostgreSQL is unreachable (during a fault)."""
    import psycopg

    try:
        with _connect(db) as conn:
            row = conn.execute("SELECT count(*) FROM dicom_image_meta").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return None


class RowCounter:
    """Counts instance rows over one kept connection (the monitor asks twice a second).

    A fresh connection per count would cost a PostgreSQL backend fork each
    time, on a machine whose two cores the load under test needs. The
    connection is dropped on any error (PostgreSQL killed) and made again
    at the next count.
    """

    def __init__(self, db: DatabaseSettings) -> None:
        self.db = db
        self._conn: Any = None

    def count(self) -> int | None:
        """Instance rows now, or None while PostgreSQL is unreachable."""
        import psycopg

        try:
            if self._conn is None:
                self._conn = psycopg.connect(self.db.conninfo(), connect_timeout=3, autocommit=True)
            row = self._conn.execute("SELECT count(*) FROM dicom_image_meta").fetchone()
            return int(row[0]) if row else 0
        except psycopg.Error:
            self.close()
            return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close; nothing to do
                pass
            self._conn = None


def read_change_history(db: DatabaseSettings) -> tuple[set[str], set[str]]:
    """(SOP UIDs the change log ever recorded as created or updated, those whose newest change is a delete).

    What a phase that also deletes needs: an instance answered Success must
    have been indexed once, and if its row is gone, a delete must be the
    reason. Read from ``dicom_change_log`` itself, written in the same
    transaction as the index rows.

    Raises:
        psycopg.Error: PostgreSQL unreachable.
    """
    ever: set[str] = set()
    deleted: set[str] = set()
    with _connect(db) as conn:
        for (sop_uid,) in conn.execute(
            "SELECT DISTINCT sop_uid FROM dicom_change_log WHERE action IN ('create', 'update')"
        ):
            ever.add(sop_uid)
        for (sop_uid,) in conn.execute(
            """
            SELECT sop_uid FROM (
                SELECT DISTINCT ON (tenant_id, sop_uid) sop_uid, action FROM dicom_change_log
                ORDER BY tenant_id, sop_uid, sequence DESC
            ) newest WHERE action = 'delete'
            """
        ):
            deleted.add(sop_uid)
    return ever, deleted


def read_rows(db: DatabaseSettings) -> RowSummary:
    """Every instance row's SOP UID, duplicates per SOP UID, and series counts that disagree.

    Raises:
        psycopg.Error: PostgreSQL unreachable (the caller retries or reports).
    """
    out = RowSummary()
    with _connect(db) as conn:
        for (sop_uid, n) in conn.execute("SELECT sop_uid, count(*) FROM dicom_image_meta GROUP BY sop_uid"):
            out.sop_uids.add(sop_uid)
            if n > 1:
                out.duplicates[sop_uid] = int(n)
        out.series_mismatches = [
            (series_uid, related, int(actual))
            for series_uid, related, actual in conn.execute(
                """
                SELECT s.series_uid, s.series_related_instances, count(i.sop_uid)
                FROM dicom_state_meta s
                LEFT JOIN dicom_image_meta i
                  ON i.tenant_id = s.tenant_id AND i.study_uid = s.study_uid AND i.series_uid = s.series_uid
                GROUP BY s.tenant_id, s.study_uid, s.series_uid, s.series_related_instances
                HAVING s.series_related_instances IS DISTINCT FROM count(i.sop_uid)
                """
            )
        ]
        row = conn.execute("SELECT count(*) FROM dicom_state_meta").fetchone()
        out.series_rows = int(row[0]) if row else 0
        row = conn.execute("SELECT count(*) FROM dicom_object_meta").fetchone()
        out.receipt_rows = int(row[0]) if row else 0
    return out


class _Sop(msgspec.Struct):
    """The one field of a store event the DLQ check needs, read leniently."""

    sop_uid: str | None = None


_sop_decoder = msgspec.json.Decoder(_Sop)


def read_dead_letters(kafka: KafkaSettings, topic: str, timeout_s: float = 60.0) -> list[DeadLetter]:
    """Every message of the dead-letter topic, with its reason headers and SOP UID (if any).

    Raises:
        dicomflow.kafka.exceptions.TopicAdminError: the topic cannot be read.
    """
    from dicomflow.kafka.reader import read_all

    out: list[DeadLetter] = []
    for r in read_all(kafka, topic, timeout_s=timeout_s):
        headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
        value = r.value or b""
        try:
            sop_uid = _sop_decoder.decode(value).sop_uid
        except (msgspec.DecodeError, msgspec.ValidationError):
            sop_uid = None
        out.append(DeadLetter(r.key, value, headers.get(HEADER_ERROR_CLASS, ""), headers.get(HEADER_REASON, ""),
                              sop_uid, headers))
    return out


def _group_offsets(
    kafka: KafkaSettings, topics: TopicSettings, timeout_s: float, with_high: bool
) -> dict[int, tuple[int, int]] | None:
    """Per partition of the main topic: (the phase's group's committed offset, 0 if none; the
    high watermark, or -1 when ``with_high`` is false). None when Kafka does not answer.

    Reads the committed offsets without joining the group, so the consumer is not disturbed.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": kafka.brokers, "group.id": topics.consumer_group_id,
        "enable.auto.commit": False, "log_level": 0,
    })
    try:
        metadata = consumer.list_topics(topics.main, timeout=timeout_s)
        described = metadata.topics.get(topics.main)
        if described is None or described.error is not None:
            return None
        tps = [TopicPartition(topics.main, p) for p in described.partitions]
        out: dict[int, tuple[int, int]] = {}
        for tp in consumer.committed(tps, timeout=timeout_s):
            high = -1
            if with_high:
                _, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout_s)
            out[tp.partition] = (max(tp.offset, 0), high)
        return out
    except KafkaException:
        return None
    finally:
        consumer.close()


def committed_offsets(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 10.0) -> dict[int, int] | None:
    """The phase's consumer group's committed offset per partition of the main topic (0: none yet).

    None when Kafka does not answer.
    """
    offsets = _group_offsets(kafka, topics, timeout_s, with_high=False)
    return None if offsets is None else {p: done for p, (done, _) in offsets.items()}


def consumer_lag(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float = 10.0) -> int | None:
    """Messages of the main topic not yet committed by the phase's consumer group; None if unknown."""
    offsets = _group_offsets(kafka, topics, timeout_s, with_high=True)
    return None if offsets is None else sum(max(high - done, 0) for done, high in offsets.values())


def wait_drained(kafka: KafkaSettings, topics: TopicSettings, timeout_s: float, stable_s: float = 2.0) -> bool:
    """Wait until the consumer group has committed everything on the main topic.

    Returns False if the lag is still not zero after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    zero_since: float | None = None
    while time.monotonic() < deadline:
        lag = consumer_lag(kafka, topics)
        if lag == 0:
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= stable_s:
                return True
        else:
            zero_since = None
        time.sleep(0.5)
    return False


def subset_check(name: str, wanted: Iterable[str], found: set[str]) -> tuple[Check, set[str]]:
    """``wanted ⊆ found``, with the missing ones."""
    missing = set(wanted) - found
    sample = ", ".join(sorted(missing)[:3])
    return Check(name, not missing, f"{len(missing)} missing" + (f" (e.g. {sample})" if missing else "")), missing


__all__ = [
    "Check",
    "DeadLetter",
    "RowCounter",
    "RowSummary",
    "committed_offsets",
    "consumer_lag",
    "count_rows",
    "read_change_history",
    "read_dead_letters",
    "read_rows",
    "subset_check",
    "wait_drained",
]
