"""The consumer under faults: SIGKILL mid-batch, a crash between publish and commit, PostgreSQL down for 20 s.

Every test ends with exact row counts: nothing lost, nothing duplicated.
Derived events are at least once: a replayed batch publishes its events
again, so these tests count distinct keys, and at least one event per key.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from pathlib import Path

import pytest

import dicomflow.pipeline.loop as loop_module
from dicomflow.kafka.admin import create_topics
from dicomflow.models import DicomStoreMeta, md5_key
from dicomflow.pipeline.commit import Progress, Sinks, persist, publish
from dicomflow.pipeline.types import ParsedBatch
from dicomflow.settings import Settings, StackSettings
from dicomflow.stack import KafkaBroker, LocalStack, PostgresServer, free_ports
from dicomflow.store import PgStore
from tests.integration.consumer_support import (
    BackgroundService,
    committed_total,
    corpus,
    counts,
    expected_counts,
    key_counts,
    pipeline,
    run_service,
    series_instance_counts,
    start_consume,
    topic,
    wait_for,
)
from tests.integration.consumer_support import (
    publish as publish_events,
)
from tests.integration.own_postgres_support import own_postgres

__all__ = ["own_postgres", "pipeline"]


def image_keys(events: list[DicomStoreMeta]) -> set[bytes]:
    return {md5_key(e.tenant_id, e.patient_id, e.study_uid, e.series_uid, e.sop_uid).encode() for e in events}


def test_sigkill_mid_batch_then_restart_gives_exact_counts(pipeline: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(pipeline, consumer=dataclasses.replace(pipeline.consumer, batch_max_messages=200))
    c = corpus(settings, 3000, studies=5, series_per_study=6)
    publish_events(settings, c.events)

    proc = start_consume(settings, tmp_path / "first.log")
    try:
        wait_for("some batches committed", lambda: counts(settings.database)["dicom_image_meta"] >= 400, 120, every_s=0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the consumer and its parse workers, mid-batch
        proc.wait(30)
    rows_at_kill = counts(settings.database)["dicom_image_meta"]
    assert rows_at_kill < 3000, "the consumer finished before it could be killed; make the corpus bigger"
    assert committed_total(settings) <= rows_at_kill  # offsets never run ahead of PostgreSQL

    proc = start_consume(settings, tmp_path / "second.log", "--until-idle", "4")
    assert proc.wait(300) == 0, (tmp_path / "second.log").read_text()

    assert counts(settings.database) == expected_counts(c)
    assert series_instance_counts(settings.database) == {s.series_uid: s.instances for s in c.series}
    assert committed_total(settings) == 3000
    keys = key_counts(topic(settings, settings.topics.dicom_image))
    assert set(keys) == image_keys(c.events)  # every instance event published at least once


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the loop handles it."""


def test_crash_after_publish_before_commit_replays_harmlessly(pipeline: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    c = corpus(pipeline, 250, studies=1, series_per_study=3)
    publish_events(pipeline, c.events)
    crashed: list[int] = []

    def persist_publish_then_die(batch: ParsedBatch, progress: Progress, sinks: Sinks) -> Progress:
        persist(batch, progress, sinks.store)
        publish(batch, progress, sinks)
        crashed.append(len(batch))
        raise Crash("died between the acknowledgements and the offset commit")

    monkeypatch.setattr(loop_module, "persist_publish_commit", persist_publish_then_die)
    with pytest.raises(Crash):
        run_service(pipeline)
    assert crashed and counts(pipeline.database)["dicom_image_meta"] == crashed[0]
    assert committed_total(pipeline) == 0
    monkeypatch.undo()

    summary = run_service(pipeline)

    assert summary.committed_records == 250  # the crashed batch was read again
    assert counts(pipeline.database) == expected_counts(c)
    assert series_instance_counts(pipeline.database) == {s.series_uid: s.instances for s in c.series}
    assert committed_total(pipeline) == 250
    images = topic(pipeline, pipeline.topics.dicom_image)
    assert set(key_counts(images)) == image_keys(c.events)
    assert len(images) == 250 + crashed[0]  # the crashed batch's events twice, all others once




@pytest.mark.slow
def test_postgres_down_for_20_s_the_consumer_recovers_by_itself(pipeline: Settings, own_postgres: PostgresServer) -> None:
    db = own_postgres.database
    store = PgStore(db)
    store.migrate()
    store.close()
    settings = dataclasses.replace(pipeline, database=db)
    c = corpus(settings, 1200, studies=4, series_per_study=3)
    first, second = c.events[:600], c.events[600:]
    publish_events(settings, first)

    bg = BackgroundService(settings, until_idle_s=8.0).start()
    try:
        wait_for("rows before the outage", lambda: counts(db)["dicom_image_meta"] > 0, 60, every_s=0.02)
        own_postgres.stop(mode="fast")
        down_at = time.monotonic()
        publish_events(settings, second)
        wait_for("a failed attempt", lambda: bg.service.loop.summary.retries > 0, 30)
        committed_while_down = committed_total(settings)
        time.sleep(max(0.0, 20.0 - (time.monotonic() - down_at)))
        assert committed_total(settings) == committed_while_down < 1200  # nothing committed past the fault
        health = bg.service.health.report()
        assert not health.ok and health.checks["postgresql"] != "ok"
        own_postgres.start()
        summary = bg.join(300)
    finally:
        bg.service.stop()

    assert summary.retries >= 3  # backoff kept trying during the 20 s
    assert counts(db) == expected_counts(c)
    assert series_instance_counts(db) == {s.series_uid: s.instances for s in c.series}
    assert committed_total(settings) == 1200
    assert set(key_counts(topic(settings, settings.topics.dicom_image))) == image_keys(c.events)


@pytest.mark.slow
# KafkaBroker.start leaves the broker running detached; its Popen handle warns when collected.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning")
def test_kafka_down_mid_stream_the_consumer_pauses_and_recovers_by_itself(
    pipeline: Settings, stack: LocalStack, tmp_path: Path
) -> None:
    """A throwaway broker (never the shared one) is SIGKILLed while the consumer works, then restarted."""
    home = tmp_path / "broker"
    home.mkdir()
    (home / "cache").symlink_to(stack.settings.stack.dir.resolve() / "cache")
    broker = KafkaBroker(StackSettings(dir=home, kafka_port=(ports := free_ports(2))[0], kafka_controller_port=ports[1], kafka_heap_mb=256))
    broker.start()
    try:
        kafka = dataclasses.replace(pipeline.kafka, brokers=broker.bootstrap, message_timeout_ms=3000)
        # Small batches: the outage must land while work is left, however fast this machine is.
        consumer = dataclasses.replace(pipeline.consumer, batch_max_messages=50)
        settings = dataclasses.replace(pipeline, kafka=kafka, consumer=consumer)
        create_topics(kafka, settings.topics)
        c = corpus(settings, 1500, studies=3, series_per_study=4)
        publish_events(settings, c.events)

        bg = BackgroundService(settings, until_idle_s=8.0).start()
        try:
            wait_for("rows before the outage", lambda: counts(settings.database)["dicom_image_meta"] > 0, 60, every_s=0.02)
            broker.kill()
            # The outage shows as a failed publish (retried with backoff) or, when it
            # hits the offset commit, as a commit librdkafka defers until the group
            # coordinator is back; either way nothing new may be taken in.
            try:
                wait_for("a failed attempt", lambda: bg.service.loop.summary.retries > 0, 15)
            except AssertionError:
                pass
            rows_during = counts(settings.database)["dicom_image_meta"]
            time.sleep(5)
            assert counts(settings.database)["dicom_image_meta"] == rows_during  # paused: nothing new taken in
            broker.start()
            bg.join(300)
        finally:
            bg.service.stop()

        assert counts(settings.database) == expected_counts(c)
        assert series_instance_counts(settings.database) == {s.series_uid: s.instances for s in c.series}
        assert committed_total(settings) == 1500
        assert set(key_counts(topic(settings, settings.topics.dicom_image))) == image_keys(c.events)
    finally:
        broker.stop()
