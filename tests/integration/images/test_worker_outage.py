"""``dicomflow images`` through a PostgreSQL SIGKILL and an unmounted storage root: it pauses, resumes, loses nothing.

An outage of the database or of the storage is not the events' fault: the
worker retries the batch (partitions paused, backing off while it polls) and
dead-letters nothing; once the dependency is back every series gets its
thumbnail and every offset is committed.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry

from dicomflow.images.worker import ImageWorker, Summary
from dicomflow.kafka.reader import read_all
from dicomflow.metrics.images import ImagesMetrics
from dicomflow.settings import Settings
from dicomflow.stack import PostgresServer
from dicomflow.store import PgStore
from tests.integration.consumer_support import committed_total, corpus, pipeline, publish, run_service
from tests.integration.own_postgres_support import own_postgres, restart

__all__ = ["own_postgres", "pipeline"]


class Worker:
    """An image worker in a thread of the test, its result or its exception kept."""

    def __init__(self, settings: Settings) -> None:
        self.metrics = ImagesMetrics(CollectorRegistry())
        self.worker = ImageWorker(settings, self.metrics, until_idle_s=4.0)
        self.summary: Summary | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="image-worker", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.summary = self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def retries(self) -> float:
        return self.metrics.retries._value.get()  # type: ignore[attr-defined]  # prometheus_client's counter value

    def join(self, timeout_s: float) -> Summary:
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            self.worker.stop()
            self.thread.join(30)
            raise AssertionError("the image worker did not finish")
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def _wait(what: str, condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _thumbnails(settings: Settings) -> set[str]:
    with psycopg.connect(settings.database.conninfo()) as conn:
        rows = conn.execute("SELECT DISTINCT series_uid FROM dicom_image_meta WHERE thumbnail_location IS NOT NULL")
        return {r[0] for r in rows.fetchall()}


def _indexed(settings: Settings) -> tuple[Settings, set[str]]:
    """A corpus indexed by the consumer (its instance events on dicom_image_queue), and its series."""
    settings = dataclasses.replace(
        settings, worker_node_id="images-outage",
        images=dataclasses.replace(settings.images, group_id=f"images_{uuid.uuid4().hex[:10]}", batch_max_messages=4))
    c = corpus(settings, 16, studies=2, series_per_study=2)
    publish(settings, c.events)
    run_service(settings, until_idle_s=3.0)
    return settings, {s.series_uid for s in c.series}


def _nothing_lost(settings: Settings, summary: Summary, series: set[str]) -> None:
    assert summary.dead_lettered == 0, summary
    letters = read_all(settings.kafka, f"{settings.topics.dicom_image}.dlq")
    assert letters == [], [dict(r.headers) for r in letters]
    assert _thumbnails(settings) == series, (summary, series - _thumbnails(settings))
    images = settings.topics.dicom_image
    produced = len(read_all(settings.kafka, images))
    committed = committed_total(dataclasses.replace(
        settings, topics=dataclasses.replace(settings.topics, main=images, consumer_group_id=settings.images.group_id),
    ))
    assert committed == produced, (committed, produced, summary)


def test_postgres_sigkilled_the_worker_pauses_and_resumes(pipeline: Settings, own_postgres: PostgresServer) -> None:
    db = own_postgres.database
    with PgStore(db) as store:
        store.migrate()
    settings, series = _indexed(dataclasses.replace(pipeline, database=db))
    own_postgres.kill()
    worker = Worker(settings)
    _wait("two failed attempts", lambda: worker.retries() >= 2, 60)
    assert _no_thumbnail_written(settings)
    restart(own_postgres)
    summary = worker.join(180)
    _nothing_lost(settings, summary, series)


def test_storage_root_unmounted_the_worker_pauses_and_resumes(pipeline: Settings) -> None:
    settings, series = _indexed(pipeline)
    root = Path(settings.storage.root)
    away = root.with_name(root.name + ".unmounted")
    root.rename(away)
    try:
        worker = Worker(settings)
        _wait("two failed attempts", lambda: worker.retries() >= 2, 60)
        assert worker.metrics.dead_lettered._value.get() == 0  # type: ignore[attr-defined]
    finally:
        away.rename(root)
    summary = worker.join(180)
    _nothing_lost(settings, summary, series)


def _no_thumbnail_written(settings: Settings) -> bool:
    return not list(Path(settings.storage.root).rglob("thumbnail.jpg"))
