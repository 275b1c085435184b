"""End to end: DICOM files → dicomflow publish → consumer (PostgreSQL) → warehouse sink (DuckDB).

The warehouse must hold what PostgreSQL holds: one receipt per instance,
one state per series, one row per instance, with the same values; replayed
store events add no rows, and the series states they re-publish replace the
rows in place.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import duckdb

from dicomflow.kafka.producer import Publisher
from dicomflow.scanner.publish import FolderPublisher
from dicomflow.scanner.walk import iter_files
from dicomflow.settings import Settings
from dicomflow.warehouse.report import DuckDBSource, build_report
from tests.integration.consumer_support import corpus, counts, pipeline, publish, query, run_service
from tests.integration.ingest_support import read_store_events
from tests.integration.warehouse_support import run_sink, wh_counts

__all__ = ["pipeline"]


def _warehouse(settings: Settings, tmp_path: Path) -> Settings:
    w = dataclasses.replace(
        settings.warehouse, path=tmp_path / "warehouse.duckdb", group_id=f"{settings.topics.consumer_group_id}_wh",
        batch_max_messages=500, batch_max_ms=200, snapshot_interval_s=0, threads=1,
    )
    return dataclasses.replace(settings, warehouse=w)


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return list(con.execute(sql).fetchall())
    finally:
        con.close()


def _in_postgresql(settings: Settings) -> dict[str, int]:
    pg = counts(settings.database)
    return {"receipts": pg["dicom_object_meta"], "series_states": pg["dicom_state_meta"],
            "instances": pg["dicom_image_meta"]}


def _states(rows: list[tuple[object, ...]]) -> dict[object, tuple[object, ...]]:
    return {r[0]: tuple(r[1:]) for r in rows}


STATE_SQL = "SELECT series_uid, series_related_instances, modality, updated_time FROM {} ORDER BY 1"
IMAGE_SQL = "SELECT sop_uid, space_size, transfer_syntax_uid, updated_time FROM {} ORDER BY 1"


def test_publish_consume_sink_gives_the_warehouse_postgresql_counts(pipeline: Settings, tmp_path: Path) -> None:
    settings = _warehouse(pipeline, tmp_path)
    c = corpus(settings, 120, studies=3, series_per_study=4)
    started = time.monotonic()
    with Publisher(settings.kafka, settings.topics) as publisher:
        summary = FolderPublisher(settings, publisher).run(list(iter_files([Path(settings.storage.root)])))
    assert len(summary.published) == 120 and summary.ok
    assert run_service(settings).instances == 120
    indexed_by = time.monotonic() - started  # every instance was indexed within this
    sink = run_sink(settings)
    assert sink.dead_lettered == 0

    pg = _in_postgresql(settings)
    assert pg == {"receipts": 120, "series_states": 12, "instances": 120}
    got = wh_counts(settings.warehouse.path)
    assert {k: got[k] for k in pg} == pg
    assert got["audit_events"] > 0  # the publisher's transfer audit events
    path = settings.warehouse.path
    # The same rows, not just as many: every SOP Instance, every series with its instance count.
    assert _rows(path, "SELECT sop_uid FROM receipts ORDER BY 1") == query(
        settings.database, "SELECT sop_uid FROM dicom_object_meta ORDER BY 1")
    assert _rows(path, IMAGE_SQL.format("instances")) == query(settings.database, IMAGE_SQL.format("dicom_image_meta"))
    states = _states(_rows(path, STATE_SQL.format("series_states")))
    assert states == _states(query(settings.database, STATE_SQL.format("dicom_state_meta")))
    assert sorted(n for n, *_ in states.values()) == sorted(s.instances for s in c.series if s.instances)

    # Ingest latency: store event created -> instance indexed (the consumer's image message), per receipt.
    (later, _), = _rows(path, "SELECT count(*) FILTER (WHERE i.indexed_time > r.created_time), count(*) FROM receipts r "
                              "JOIN instances i USING (tenant_id, patient_id, study_uid, series_uid, sop_uid)")
    assert later == 120
    source = DuckDBSource(settings)
    try:
        latency = build_report(source).as_dict()["latency_per_day"]
    finally:
        source.close()
    assert sum(r["n"] for r in latency) == 120
    for r in latency:
        assert 0 < r["p50"] <= r["p95"] <= r["p99"] < indexed_by * 1000, r

    # Replay: the same store events again (a consumer crash after PostgreSQL, say). The consumer
    # re-indexes them and re-publishes their states and instances.
    published = [e for _, e in read_store_events(settings, settings.topics.main)]
    assert len(published) == 120
    publish(settings, published)
    assert run_service(settings).instances == 120
    again = run_sink(settings)
    # every instance event and at least one state per series came again: all upserts, no new row
    assert again.consumed >= 120 + 12 and again.dead_lettered == 0
    assert {k: v for k, v in wh_counts(path).items() if k in pg} == _in_postgresql(settings) == pg
    newer = _states(_rows(path, STATE_SQL.format("series_states")))
    assert newer == _states(query(settings.database, STATE_SQL.format("dicom_state_meta")))
    assert newer.keys() == states.keys() and all(newer[k][2] >= states[k][2] for k in states)
    assert _rows(path, IMAGE_SQL.format("instances")) == query(settings.database, IMAGE_SQL.format("dicom_image_meta"))
