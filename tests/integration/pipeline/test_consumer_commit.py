"""The offset commit during a group-coordinator outage: bounded, retried, and the loop keeps polling.

A throwaway broker (never the shared one) is frozen with SIGSTOP at the very
moment the consumer commits a batch's offsets, and thawed six seconds later:
requests neither fail nor answer, the worst case for a synchronous commit.
The commit's wait ends after ``consumer.commit_timeout_ms``; the loop retries
the commit with backoff and keeps polling; ``/healthz`` says the loop polls
but the commit is stuck; once the broker is back every offset is committed,
with exact counts.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from dicomflow.kafka.admin import create_topics
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.records import TP
from dicomflow.settings import Settings, StackSettings
from dicomflow.stack import KafkaBroker, LocalStack, free_ports
from tests.integration.consumer_support import (
    BackgroundService,
    committed_total,
    corpus,
    counts,
    expected_counts,
    pipeline,
    publish,
    wait_for,
)

__all__ = ["pipeline"]

FREEZE_S = 6.0


@pytest.mark.slow
# KafkaBroker.start leaves the broker running detached; its Popen handle warns when collected.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning")
def test_commit_during_a_frozen_coordinator_is_bounded_retried_and_the_loop_keeps_polling(
    pipeline: Settings, stack: LocalStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "broker"
    home.mkdir()
    (home / "cache").symlink_to(stack.settings.stack.dir.resolve() / "cache")
    broker = KafkaBroker(StackSettings(dir=home, kafka_port=(ports := free_ports(2))[0], kafka_controller_port=ports[1], kafka_heap_mb=256))
    broker.start()
    pid = broker.pid()
    assert pid is not None
    thaw: threading.Timer | None = None
    try:
        kafka = dataclasses.replace(pipeline.kafka, brokers=broker.bootstrap)
        # A session longer than the freeze: the member must survive it (no rebalance to hide behind).
        consumer = dataclasses.replace(pipeline.consumer, commit_timeout_ms=1000, session_timeout_ms=30000,
                                       retry_initial_ms=200, retry_max_ms=500)
        settings = dataclasses.replace(pipeline, kafka=kafka, consumer=consumer)
        create_topics(kafka, settings.topics)
        c = corpus(settings, 300, studies=2, series_per_study=3)
        publish(settings, c.events)

        frozen_at: list[float] = []
        real_commit = KafkaConsumer.commit

        def commit_with_the_coordinator_frozen(self: KafkaConsumer, offsets: Mapping[TP, int], timeout_s: float = 5.0) -> None:
            nonlocal thaw
            if not frozen_at:  # the first commit: the broker stops answering right now
                frozen_at.append(time.monotonic())
                os.kill(pid, signal.SIGSTOP)
                thaw = threading.Timer(FREEZE_S, os.kill, (pid, signal.SIGCONT))
                thaw.start()
            real_commit(self, offsets, timeout_s)

        monkeypatch.setattr(KafkaConsumer, "commit", commit_with_the_coordinator_frozen)
        bg = BackgroundService(settings, until_idle_s=6.0).start()
        try:
            wait_for("the first commit", lambda: bool(frozen_at), 60, every_s=0.02)
            wait_for("a retried commit", lambda: bg.service.loop.summary.retries >= 2, FREEZE_S - 1)
            time.sleep(max(0.0, frozen_at[0] + 3.5 - time.monotonic()))
            health = bg.service.health.report()
            age = bg.service.health.poll_age_s()
            assert time.monotonic() < frozen_at[0] + FREEZE_S  # still frozen
            assert health.checks["loop"] == "ok" and age is not None and age < 1.5, (health, age)  # it keeps polling
            assert not health.ok and "offset commit unconfirmed" in health.checks["offset-commit"], health
            summary = bg.join(120)
        finally:
            bg.service.stop()
            if thaw is not None:
                thaw.cancel()
            os.kill(pid, signal.SIGCONT)

        assert summary.retries >= 2
        assert summary.dropped_on_revoke == 0  # the member kept its partitions through the outage
        assert counts(settings.database) == expected_counts(c)
        assert committed_total(settings) == 300
    finally:
        broker.stop()

