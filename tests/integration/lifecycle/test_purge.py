"""``dicomflow purge`` against the real stack: objects of a deleted series gone, dicom_change_queue = the change feed."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import duckdb
import psycopg

from dicomflow.kafka.reader import read_all
from dicomflow.lifecycle import LifecycleWorker
from dicomflow.lifecycle.events import ChangeEvent
from dicomflow.models import decode
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings
from dicomflow.store import DeleteTarget, PgStore
from dicomflow.warehouse.sink import WarehouseSink
from tests.integration.consumer_support import corpus, pipeline, publish
from tests.integration.lifecycle.test_delete_web import Server, server, study_of_three_series

__all__ = ["pipeline", "server"]  # the fixtures, used by name


def _files_of(server: Server, series_uid: str) -> list[Path]:
    with psycopg.connect(server.settings.database.conninfo()) as conn:
        rows = conn.execute("SELECT file_path FROM dicom_object_meta WHERE series_uid = %s", (series_uid,)).fetchall()
    return [Path(r[0]) for r in rows]


def test_purge_removes_the_objects_and_publishes_the_feed(server: Server, tmp_path: Path) -> None:
    study, series, files = study_of_three_series()
    server.store(files)
    ConsumerService(server.settings, until_idle_s=3.0).run()
    gone, kept = _files_of(server, series[1]), _files_of(server, series[0]) + _files_of(server, series[2])
    assert len(gone) == 2 and all(p.is_file() for p in gone + kept)
    assert server.delete(f"/studies/{study}/series/{series[1]}").status_code == 204
    assert all(p.is_file() for p in gone)  # only the index changed so far

    result = LifecycleWorker(server.settings).run(until_idle_s=1.0)
    assert (result.published, result.purged) == (8, 2)
    assert not any(p.exists() for p in gone)
    assert all(p.is_file() for p in kept)
    with psycopg.connect(server.settings.database.conninfo()) as conn:
        assert conn.execute("SELECT count(*) FROM dicom_purge_queue").fetchone() == (0,)

    # dicom_change_queue holds the change feed's entries, keyed by study, in sequence order per study.
    records = read_all(server.settings.kafka, server.settings.topics.change)
    events = [decode(r.value or b"", ChangeEvent) for r in records]
    assert {r.key for r in records} == {study.encode()}
    per_partition: dict[int, list[int]] = defaultdict(list)
    for r, e in zip(records, events, strict=True):
        per_partition[r.partition].append(e.sequence)
    assert all(seqs == sorted(seqs) for seqs in per_partition.values())
    feed = server.get("/changefeed?includemetadata=false").json()
    assert sorted((e.sequence, e.sop_uid, e.action) for e in events) == [
        (f["Sequence"], f["SopInstanceUid"], f["Action"]) for f in feed]

    # The warehouse marks the deleted instances DELETED, and the emptied series has 0 instances.
    sink = dataclasses.replace(server.settings, warehouse=dataclasses.replace(
        server.settings.warehouse, path=tmp_path / "wh.duckdb", group_id=f"{server.settings.topics.consumer_group_id}_wh",
        batch_max_ms=300, snapshot_interval_s=0.0, threads=1))
    WarehouseSink(sink, until_idle_s=3.0).run()
    con = duckdb.connect(str(tmp_path / "wh.duckdb"), read_only=True)
    try:
        marks = con.execute("SELECT series_uid, image_status, count(*) FROM instances GROUP BY 1, 2").fetchall()
        counts = dict(con.execute("SELECT series_uid, series_related_instances FROM series_states").fetchall())
    finally:
        con.close()
    assert sorted(marks) == sorted([(series[0], "ACTIVE", 2), (series[1], "DELETED", 2), (series[2], "ACTIVE", 2)])
    assert counts == {series[0]: 2, series[1]: 0, series[2]: 2}

    # Again: nothing left to do, nothing published twice. Then re-store the series: new creates, published.
    assert LifecycleWorker(server.settings).run(until_idle_s=0.5).published == 0
    server.store(files[2:4])
    ConsumerService(server.settings, until_idle_s=3.0).run()
    assert all(p.is_file() for p in _files_of(server, series[1]))
    assert LifecycleWorker(server.settings).run(until_idle_s=0.5).published == 2
    feed = server.get("/changefeed?includemetadata=false").json()
    assert [f["Action"] for f in feed[-2:]] == ["create", "create"]
    assert feed[-1]["Sequence"] > feed[-3]["Sequence"]


def test_objects_stay_until_the_purge_delay_has_passed(pipeline: Settings) -> None:
    settings = dataclasses.replace(pipeline, lifecycle=dataclasses.replace(pipeline.lifecycle, purge_delay="1h"))
    c = corpus(settings, 4, studies=1, series_per_study=1)
    publish(settings, c.events)
    ConsumerService(settings, until_idle_s=2.0).run()
    with PgStore(settings.database) as store:
        deleted = store.delete(DeleteTarget(settings.storage.default_tenant, c.events[0].study_uid),
                               purge_delay_s=settings.lifecycle.purge_delay_s)
    assert len(deleted.instances) == 4
    result = LifecycleWorker(settings).run(until_idle_s=0.5)
    assert (result.published, result.purged) == (8, 0)
    assert all(Path(e.file_path).is_file() for e in c.events)
    with psycopg.connect(settings.database.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE dicom_purge_queue SET not_before = now() - interval '1 second'")  # an hour later
    assert LifecycleWorker(settings).run(until_idle_s=0.5).purged == 4
    assert not any(Path(e.file_path).exists() for e in c.events)
