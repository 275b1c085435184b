"""SIGKILL the consumer mid-batch and the purge worker mid-purge: the change log, the objects and the queue end exact."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

from dicomflow.kafka.reader import read_all
from dicomflow.lifecycle import LifecycleWorker
from dicomflow.lifecycle.events import ChangeEvent
from dicomflow.models import decode
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings, to_child_env
from dicomflow.store import DeleteTarget, PgStore
from tests.integration.consumer_support import corpus, pipeline, publish, query, start_consume, wait_for

__all__ = ["pipeline"]  # the fixture, used by name


def _count(settings: Settings, table: str) -> int:
    return int(query(settings.database, f"SELECT count(*) FROM {table}")[0][0])


def _kill(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def test_kills_of_the_consumer_and_the_purge_worker_end_in_the_exact_state(pipeline: Settings, tmp_path: Path) -> None:
    settings = dataclasses.replace(pipeline, lifecycle=dataclasses.replace(pipeline.lifecycle, purge_batch=5,
                                                                           publish_batch=50))
    c = corpus(settings, 600, studies=3, series_per_study=2)
    publish(settings, c.events)

    consumer = start_consume(settings, tmp_path / "consume.log", "--until-idle", "30")
    try:
        wait_for("a first batch indexed", lambda: _count(settings, "dicom_image_meta") > 0, timeout_s=120)
    finally:
        _kill(consumer)
    assert _count(settings, "dicom_image_meta") < 600, "the consumer finished before the kill"
    ConsumerService(settings, until_idle_s=3.0).run()  # resumes: replays what was not committed
    creates = query(settings.database, "SELECT sop_uid, count(*) FROM dicom_change_log WHERE action = 'create' "
                    "AND state = 'current' GROUP BY sop_uid")
    assert len(creates) == 600 and all(n == 1 for _, n in creates)
    assert _count(settings, "dicom_change_log") == 600

    study = sorted(c.studies)[0]
    files = {e.sop_uid: Path(e.file_path) for e in c.events}
    doomed = {e.sop_uid for e in c.events if e.study_uid == study}
    with PgStore(settings.database) as store:
        deleted = store.delete(DeleteTarget(settings.storage.default_tenant, study))
    assert {i.sop_uid for i in deleted.instances} == doomed

    log = (tmp_path / "purge.log").open("wb")
    purge = subprocess.Popen([sys.executable, "-c", "from dicomflow.cli import main; main()", "purge",
                              "--until-idle", "30"], env=to_child_env(settings, os.environ), cwd=tmp_path,
                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        wait_for("a first purge", lambda: _count(settings, "dicom_purge_queue") < len(doomed), timeout_s=120,
                 every_s=0.01)
    finally:
        _kill(purge)
    assert _count(settings, "dicom_purge_queue") > 0, "the purge finished before the kill"
    LifecycleWorker(settings).run(until_idle_s=1.0)

    assert _count(settings, "dicom_purge_queue") == 0
    assert not any(files[s].exists() for s in doomed)
    assert all(p.is_file() for s, p in files.items() if s not in doomed)
    events = [decode(r.value or b"", ChangeEvent) for r in read_all(settings.kafka, settings.topics.change)]
    sequences = {int(r[0]) for r in query(settings.database, "SELECT sequence FROM dicom_change_log")}
    assert {e.sequence for e in events} == sequences  # every change at least once
    assert query(settings.database, "SELECT sequence FROM dicom_change_outbox") == [(max(sequences),)]
