"""Fixtures and helpers of the consumer tests: real topics, real database, real files.

Imported by the ``test_consumer*`` modules (fixtures are re-exported there by
name). Nothing here fakes Kafka or PostgreSQL: helpers publish with the real
publisher, read topics back from the broker and count rows with SQL.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from dicomflow.corpus import Corpus, make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.kafka.records import Record
from dicomflow.models import DicomStoreMeta
from dicomflow.pipeline.service import ConsumerService
from dicomflow.pipeline.stats import RunSummary
from dicomflow.settings import DatabaseSettings, Settings, to_child_env
from dicomflow.store import PgStore

TABLES = ("dicom_object_meta", "dicom_state_meta", "dicom_image_meta")


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Settings]:
    """Test settings with the topics created, the schema migrated, small fast batches and one parse worker."""
    create_topics(settings.kafka, settings.topics)
    store = PgStore(settings.database)
    store.migrate()
    store.close()
    consumer = dataclasses.replace(
        settings.consumer, batch_max_messages=100, batch_max_ms=200, parse_workers=1,
        retry_initial_ms=100, retry_max_ms=1000, session_timeout_ms=6000,
    )
    yield dataclasses.replace(settings, consumer=consumer, worker_node_id="test-consumer")
    try:
        delete_topics(settings.kafka, settings.topics.all())
    except Exception:  # noqa: BLE001 - cleanup is best effort: a failed test must still report its own error
        pass


def corpus(settings: Settings, instances: int, *, studies: int = 3, series_per_study: int = 4) -> Corpus:
    """Files under the settings' storage root and their store events."""
    return make_corpus(Path(settings.storage.root), instances, studies=studies, series_per_study=series_per_study)


def publish(settings: Settings, events: list[DicomStoreMeta]) -> None:
    """Publish store events to the test's storage topic, acknowledged."""
    with Publisher(settings.kafka, settings.topics) as publisher:
        publisher.send_store_events(events, with_receipt=False).raise_for_failures()


def publish_raw(settings: Settings, items: list[tuple[bytes | None, bytes]]) -> None:
    """Publish arbitrary bytes (poison) to the test's storage topic."""
    with Publisher(settings.kafka, settings.topics) as publisher:
        publisher.send_raw(settings.topics.main, [(k, v, None) for k, v in items]).raise_for_failures()


def counts(db: DatabaseSettings) -> dict[str, int]:
    """Row count of each table."""
    with psycopg.connect(db.conninfo()) as conn:
        out: dict[str, int] = {}
        for table in TABLES:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
            assert row is not None
            out[table] = int(row[0])
        return out


def query(db: DatabaseSettings, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.conninfo()) as conn:
        return list(conn.execute(text, params).fetchall())  # type: ignore[arg-type]


def expected_counts(c: Corpus) -> dict[str, int]:
    return {
        "dicom_object_meta": len(c.events),
        "dicom_state_meta": sum(1 for s in c.series if s.instances),
        "dicom_image_meta": len(c.events),
    }


def series_instance_counts(db: DatabaseSettings) -> dict[str, int]:
    """series_uid -> series_related_instances as stored."""
    return {r[0]: r[1] for r in query(db, "SELECT series_uid, series_related_instances FROM dicom_state_meta")}


def run_service(settings: Settings, **kwargs: Any) -> RunSummary:
    """Run the consumer in this process until it is idle (default 4 s without a record)."""
    kwargs.setdefault("until_idle_s", 4.0)
    return ConsumerService(settings, **kwargs).run()


class BackgroundService:
    """The consumer running in a thread of the test, stoppable, with its exception kept."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        self.service = ConsumerService(settings, **kwargs)
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="consumer-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.service.run()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> BackgroundService:
        self.thread.start()
        return self

    def join(self, timeout_s: float) -> RunSummary:
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.service.stop()
            self.thread.join(30)
            raise AssertionError(f"the consumer did not finish within {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 60.0, every_s: float = 0.1) -> None:
    """Poll ``check`` until true (tests only: the system under test never sleep-polls)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(every_s)


def committed_total(settings: Settings) -> int:
    """Sum over the storage topic's partitions of the group's committed offsets (0 for none)."""
    reader = KafkaConsumer(settings.kafka, group_id=settings.topics.consumer_group_id)
    try:
        offsets = reader.committed([(settings.topics.main, p) for p in range(settings.topics.partitions)])
    finally:
        reader.close()
    return sum(max(0, o) for o in offsets.values())


def topic(settings: Settings, name: str) -> list[Record]:
    return read_all(settings.kafka, name)


def key_counts(records: list[Record]) -> Counter[bytes | None]:
    return Counter(r.key for r in records)


def start_consume(settings: Settings, log_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start ``dicomflow consume`` in its own process group (so a test can kill it with its workers)."""
    out = log_file.open("wb")
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "from dicomflow.cli import main; main()", "consume", *args],
            env=to_child_env(settings, os.environ), cwd=log_file.parent, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        out.close()


__all__ = [
    "TABLES",
    "BackgroundService",
    "committed_total",
    "corpus",
    "counts",
    "expected_counts",
    "key_counts",
    "pipeline",
    "publish",
    "publish_raw",
    "query",
    "run_service",
    "series_instance_counts",
    "start_consume",
    "topic",
    "wait_for",
]
