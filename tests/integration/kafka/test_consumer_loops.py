"""The three consumer loops (consume, warehouse run, images) under the same faults, through the same toolkit.

- A poison message is dead-lettered at once, never retried, and its offset
  passes.
- A dead-letter topic that refuses every letter (its ``max.message.bytes`` is
  smaller than any letter: a broker-side topic setting, so only that produce
  fails, at once, and the producer stays healthy) keeps the loop in its
  paused retry; a real SIGTERM to the real command then ends the process
  within a second, with nothing committed or written past the stuck batch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic
from prometheus_client import CollectorRegistry

from dicomflow.images.worker import ImageWorker
from dicomflow.kafka.admin import admin_client, create_topics, delete_topics
from dicomflow.kafka.dlq import HEADER_ERROR_CLASS, headers_dict
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.settings import Settings, to_child_env
from dicomflow.store import PgStore
from tests.integration.consumer_support import committed_total, run_service, start_consume, wait_for
from tests.integration.warehouse_support import run_sink, start_sink, wh_counts

#: Smaller than any dead letter (its headers alone are longer): the broker refuses every one.
REFUSING = {"max.message.bytes": "64"}
#: The backoff is long, so the SIGTERM surely lands inside it; the stop must not wait for it.
RETRY = {"retry_initial_ms": 5000, "retry_max_ms": 10000}


def refusing_dead_letter_topic(settings: Settings, name: str) -> None:
    """Create ``name`` (before create_topics does) with a message size limit no letter fits."""
    admin = admin_client(settings.kafka)
    for future in admin.create_topics([NewTopic(name, 1, 1, config=REFUSING)]).values():
        future.result(30)


@pytest.fixture
def loops(settings: Settings) -> Iterator[Settings]:
    """Test settings with a migrated database, small batches, one parse worker and a long backoff."""
    store = PgStore(settings.database)
    store.migrate()
    store.close()
    s = dataclasses.replace(
        settings,
        worker_node_id="loops-test",
        consumer=dataclasses.replace(settings.consumer, parse_workers=1, batch_max_ms=200, session_timeout_ms=6000),
        warehouse=dataclasses.replace(settings.warehouse, path=settings.storage.root.parent / "wh.duckdb",
                                      group_id=f"wh_{uuid.uuid4().hex[:10]}", batch_max_ms=200, threads=1),
        images=dataclasses.replace(settings.images, group_id=f"images_{uuid.uuid4().hex[:10]}"),
    )
    try:
        yield s
    finally:
        try:
            delete_topics(s.kafka, s.topics.all())
        except Exception:  # noqa: BLE001 - cleanup is best effort: a failed test must still report its own error
            pass


def send(settings: Settings, topic: str, *values: bytes) -> None:
    with Publisher(settings.kafka, settings.topics) as publisher:
        publisher.send_raw(topic, [(b"key", v, None) for v in values]).raise_for_failures()


def letters(settings: Settings, topic: str) -> list[dict[str, str]]:
    return [headers_dict(list(r.headers)) for r in read_all(settings.kafka, topic)]


@dataclass(frozen=True)
class Stopped:
    """How long after the SIGTERM the loop returned (its log line) and the process exited."""

    loop_s: float
    exit_s: float
    log: str


def sigterm_during_retry(proc: subprocess.Popen[bytes], log: Path, stopping: str) -> Stopped:
    """Wait until the command backs off a refused dead letter, SIGTERM it, time the loop's ``stopping`` line."""
    try:
        wait_for("a dead-letter retry", lambda: "retrying in" in log.read_text(errors="replace")
                 or proc.poll() is not None, 90, every_s=0.05)
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.3)  # well inside the five-second backoff
        sent, sent_wall = time.monotonic(), time.time()
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        exit_s = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    text = log.read_text(errors="replace")
    line = next((x for x in text.splitlines() if stopping in x), None)
    assert line is not None, f"no {stopping!r} line\n{text[-3000:]}"
    # The logging format's asctime: local time, milliseconds after a comma.
    at = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return Stopped(at - sent_wall, exit_s, " ".join(text.split()))


def assert_stopped_in_time(stopped: Stopped) -> None:
    """The loop honours the stop within a second; the process (closing its clients, its pool) soon after."""
    assert stopped.loop_s < 1.0, f"loop stopped {stopped.loop_s:.2f} s after SIGTERM\n{stopped.log[-3000:]}"
    assert stopped.exit_s < 5.0, f"process exited {stopped.exit_s:.2f} s after SIGTERM\n{stopped.log[-3000:]}"
    print(f"stopped {stopped.loop_s:.3f} s, exited {stopped.exit_s:.3f} s after SIGTERM")


# ---------------------------------------------------------------- poison: dead-lettered, not retried


def test_consume_dead_letters_poison_without_a_retry(loops: Settings) -> None:
    create_topics(loops.kafka, loops.topics)
    send(loops, loops.topics.main, b"{not json", b'{"trace_id": 7}')

    summary = run_service(loops, until_idle_s=2.0)

    assert summary.retries == 0 and summary.dead_lettered == 2
    assert sorted(h[HEADER_ERROR_CLASS] for h in letters(loops, loops.topics.dlq)) == ["wire-format", "wire-format"]
    assert committed_total(loops) == 2  # their offsets passed


def test_warehouse_dead_letters_poison_without_a_retry(loops: Settings) -> None:
    create_topics(loops.kafka, loops.topics)
    send(loops, loops.topics.dicom_state, b"{not json")

    summary = run_sink(loops, until_idle_s=2.0)

    assert summary.retries == 0 and summary.dead_lettered == 1
    assert [h[HEADER_ERROR_CLASS] for h in letters(loops, f"{loops.topics.dicom_state}.dlq")] == ["wire-format"]
    # Its offset passed; the sink read the audit event that says it was dead-lettered, too.
    assert summary.consumed == 2 and summary.rows["audit_events"] == 1


def test_images_dead_letter_poison_without_a_retry(loops: Settings) -> None:
    create_topics(loops.kafka, loops.topics)
    not_indexed = (b'{"tenant_id": "t", "patient_id": "p", "study_uid": "1.2", "series_uid": "1.2.3", '
                   b'"sop_uid": "1.2.3.4", "study_uid_hash": "1", "series_uid_hash": "2", '
                   b'"transfer_syntax_uid": "1.2.840.10008.1.2.1", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", '
                   b'"created_time": "2025-01-02T03:04:05", "updated_time": "2025-01-02T03:04:05"}')
    send(loops, loops.topics.dicom_image, b"{not json", not_indexed)
    registry = CollectorRegistry()

    summary = ImageWorker(loops, ImagesMetrics(registry), until_idle_s=2.0).run()

    assert summary.dead_lettered == 2 and summary.consumed == 2
    assert not registry.get_sample_value("dicomflow_images_batch_retries_total")
    classes = sorted(h[HEADER_ERROR_CLASS] for h in letters(loops, f"{loops.topics.dicom_image}.dlq"))
    assert classes == ["not-indexed", "wire-format"]


# ---------------------------------------------------------------- SIGTERM during a dead-letter retry


def test_consume_stops_within_a_second_of_sigterm_during_a_dead_letter_retry(loops: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(loops, consumer=dataclasses.replace(loops.consumer, **RETRY))
    refusing_dead_letter_topic(settings, settings.topics.dlq)
    create_topics(settings.kafka, settings.topics)
    send(settings, settings.topics.main, b"{not json")
    log = tmp_path / "consume.log"

    stopped = sigterm_during_retry(start_consume(settings, log), log, "consumer stopping: stop requested")

    assert_stopped_in_time(stopped)
    assert "stop requested during retries" in stopped.log and "Message size too large" in stopped.log
    assert committed_total(settings) == 0  # the stuck batch is replayed by the next run
    assert read_all(settings.kafka, settings.topics.dlq) == []


def test_warehouse_stops_within_a_second_of_sigterm_during_a_dead_letter_retry(loops: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(loops, consumer=dataclasses.replace(loops.consumer, **RETRY))
    refusing_dead_letter_topic(settings, f"{settings.topics.log}.dlq")
    create_topics(settings.kafka, settings.topics)
    send(settings, settings.topics.log, b"{not json")
    log = tmp_path / "warehouse.log"

    stopped = sigterm_during_retry(start_sink(settings, log), log, "warehouse sink stopping: stopped by signal")

    assert_stopped_in_time(stopped)
    assert "stopping: stopped by signal (batch not written)" in stopped.log
    assert set(wh_counts(settings.warehouse.path).values()) == {0}  # the stuck batch was not written


def test_images_stop_within_a_second_of_sigterm_during_a_dead_letter_retry(loops: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(loops, consumer=dataclasses.replace(loops.consumer, **RETRY))
    refusing_dead_letter_topic(settings, f"{settings.topics.dicom_image}.dlq")
    create_topics(settings.kafka, settings.topics)
    send(settings, settings.topics.dicom_image, b"{not json")
    log = tmp_path / "images.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dicomflow", "images"], env=to_child_env(settings, os.environ),
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    stopped = sigterm_during_retry(proc, log, "image worker stopping: stopped by signal")

    assert_stopped_in_time(stopped)
    assert "stopping: stopped by signal (batch not committed)" in stopped.log
    reader_group = dataclasses.replace(settings.topics, consumer_group_id=settings.images.group_id, main=settings.topics.dicom_image)
    assert committed_total(dataclasses.replace(settings, topics=reader_group)) == 0
    assert letters(settings, f"{settings.topics.dicom_image}.dlq") == []  # nothing got through the refusing topic
