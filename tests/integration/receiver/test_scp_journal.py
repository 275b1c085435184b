"""receiver.ack = "journal" against the real broker and PostgreSQL: Success from the journal, the event out later.

Issue 22: with the journal, Success is answered once the file and a journal
record of its store event are durable; the event then reaches Kafka from
the journal at least once, also when the receiver is SIGKILLed right after
answering (the next start publishes what the dead process had journaled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dicomflow.ingest.journal import JOURNAL
from dicomflow.ingest.journal_segment import segment_paths
from dicomflow.settings import Settings, to_child_env
from tests.integration.consumer_support import pipeline, query, run_service  # noqa: F401 - the fixture
from tests.integration.ingest_support import free_port, read_store_events, running_receiver, stored_files, with_receiver
from tests.integration.receiver.test_scp import instance, send, wait_for_port

STUDY = "1.2.826.0.1.3680043.8.498.22"


def _rows(settings: Settings) -> set[str]:
    return {r[0] for r in query(settings.database, "SELECT sop_uid FROM dicom_image_meta")}


@pytest.mark.parametrize("engine", ["native", "pynetdicom"])
def test_a_journal_acknowledged_instance_reaches_kafka_and_postgresql(pipeline: Settings, engine: str) -> None:  # noqa: F811
    settings = with_receiver(pipeline, engine=engine, ack="journal")
    datasets = [instance(study=STUDY, series=f"{STUDY}.{i % 2}") for i in range(12)]
    sops = {str(ds.SOPInstanceUID) for ds in datasets}
    with running_receiver(settings):
        statuses = send(settings.receiver.port, datasets)
    assert [s.Status for s in statuses] == [0] * len(datasets)
    # Stopped cleanly: Kafka acknowledged everything, the journal removed its segments.
    assert segment_paths(Path(settings.storage.root) / JOURNAL) == []
    files = {f.stem for f in stored_files(Path(settings.storage.root))}
    assert files == sops
    main = read_store_events(settings, settings.topics.main)
    log = read_store_events(settings, settings.topics.log)
    assert Counter(e.sop_uid for _, e in main) == Counter({sop: 1 for sop in sops})
    assert sorted(e.trace_id for _, e in log) == sorted(e.trace_id for _, e in main)
    assert not list(Path(settings.storage.root).rglob(".*.unacknowledged"))
    run_service(settings)
    assert _rows(settings) == sops


def _scp(settings: Settings, log_file: Path, brokers: str) -> subprocess.Popen[bytes]:
    env = {**to_child_env(settings, os.environ), "DICOMFLOW_KAFKA_BROKERS": brokers}
    out = log_file.open("ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "dicomflow.cli", "scp"], env=env, cwd=log_file.parent,
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def test_a_receiver_killed_after_success_publishes_the_instances_at_its_restart(
        pipeline: Settings, tmp_path: Path) -> None:  # noqa: F811
    settings = with_receiver(pipeline, ack="journal")
    log_file = tmp_path / "scp.log"
    # Kafka unreachable: Success comes from the journal alone, nothing can be published before the kill.
    nowhere = f"127.0.0.1:{free_port()}"
    first = _scp(settings, log_file, nowhere)
    try:
        wait_for_port(settings.receiver.port, first)  # type: ignore[arg-type]
        datasets = [instance(study=STUDY, series=f"{STUDY}.7") for _ in range(8)]
        statuses = send(settings.receiver.port, datasets)
        assert [s.Status for s in statuses] == [0] * len(datasets)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    sops = {str(ds.SOPInstanceUID) for ds in datasets}
    journal = Path(settings.storage.root) / JOURNAL
    assert segment_paths(journal), "the killed receiver's journal segment should be left"
    assert read_store_events(settings, settings.topics.main) == []  # nothing reached Kafka yet
    second = _scp(settings, log_file, settings.kafka.brokers)
    try:
        wait_for_port(settings.receiver.port, second)  # type: ignore[arg-type]
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log_file.read_text()[-3000:]
    main = read_store_events(settings, settings.topics.main)
    assert {e.sop_uid for _, e in main} == sops, log_file.read_text()[-3000:]
    assert {e.sop_uid for _, e in read_store_events(settings, settings.topics.log)} == sops
    assert segment_paths(journal) == []  # published, then removed
    assert "8 store event(s) of" in log_file.read_text()
    run_service(settings)
    assert _rows(settings) == sops
