"""The generated ClickHouse DDL on the real local ClickHouse server (Debian's 18.16), fed by the real broker.

A pipeline run (publisher with receipts + consumer into PostgreSQL, which
publishes series states and instances) must leave ClickHouse with the same
counts as PostgreSQL; broken messages land in ``<table>_rejected`` with their
reason and do not stop the Kafka-engine consumer.
"""

from __future__ import annotations

import datetime as dt
import uuid

from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent, CodedValue, DicomStoreMeta, encode
from dicomflow.settings import Settings
from dicomflow.warehouse.clickhouse_http import ClickHouseHTTP
from dicomflow.warehouse.ddl_clickhouse import clickhouse_ddl
from dicomflow.warehouse.report import ClickHouseSource, build_report
from tests.integration.clickhouse_support import clickhouse, clickhouse_server, wait_until
from tests.integration.consumer_support import corpus, counts, pipeline, run_service

__all__ = ["clickhouse", "clickhouse_server", "pipeline"]  # fixtures, re-exported for pytest


def _count(client: ClickHouseHTTP, db: str, table: str, final: bool = False) -> int:
    if final:
        client.execute(f"OPTIMIZE TABLE {db}.{table} FINAL")
    return int(client.scalar(f"SELECT count() AS n FROM {db}.{table}"))


def _receipt(n: int, *, image_type_like: str = "") -> DicomStoreMeta:
    return DicomStoreMeta(
        trace_id=str(uuid.uuid4()), worker_node_id="w1", tenant_id="t1", patient_id=f"p{n}", study_uid=f"1.2.{n}",
        series_uid=f"1.2.{n}.1", sop_uid=f"1.2.{n}.1.1", file_size=1000 + n, file_path=f"/x/{n}{image_type_like}.dcm",
        transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1,
        created_time=dt.datetime(2024, 3, 4, 5, 6, 7, 123456), series_uid_hash="1" * 20, study_uid_hash="2" * 20,
        target_ts="1.2.840.10008.1.2.1", study_date=dt.date(2023, 12, 31), transfer_status="NoNeedTransfer",
        source_ip="127.0.0.1", source_ae="CT01",
    )


def test_pipeline_run_gives_clickhouse_the_counts_of_postgresql(clickhouse: tuple[Settings, ClickHouseHTTP]) -> None:
    settings, client = clickhouse
    db = settings.clickhouse.database
    assert client.apply(clickhouse_ddl(settings, legacy=True)) == 1 + 4 * 5

    c = corpus(settings, 90, studies=3, series_per_study=3)
    with Publisher(settings.kafka, settings.topics) as publisher:
        publisher.send_store_events(c.events, with_receipt=True).raise_for_failures()
        # A re-published receipt is a second row in an append table; a re-published instance is not.
    summary = run_service(settings)
    assert summary.instances == 90
    pg = counts(settings.database)

    wait_until("ClickHouse receipts", lambda: _count(client, db, "receipts") >= pg["dicom_object_meta"])
    wait_until("ClickHouse instances", lambda: _count(client, db, "instances") >= pg["dicom_image_meta"])
    wait_until("ClickHouse series states", lambda: _count(client, db, "series_states", final=True) >= pg["dicom_state_meta"])
    assert _count(client, db, "receipts") == pg["dicom_object_meta"] == 90
    assert _count(client, db, "instances", final=True) == pg["dicom_image_meta"] == 90
    assert _count(client, db, "series_states", final=True) == pg["dicom_state_meta"]
    for table in ("receipts", "series_states", "instances"):
        assert _count(client, db, f"{table}_rejected") == 0

    # Values arrive intact: sizes sum up, datetimes keep their fraction in the _text column,
    # the state versions collapsed to the one with the full instance count.
    assert int(client.scalar(f"SELECT sum(file_size) AS s FROM {db}.receipts")) == sum(e.file_size for e in c.events)
    texts = {r["created_time_text"] for r in client.rows(f"SELECT created_time_text FROM {db}.receipts")}
    assert texts == {e.created_time.isoformat() for e in c.events}
    related = {r["series_uid"]: r["n"] for r in client.rows(
        f"SELECT series_uid, series_related_instances AS n FROM {db}.series_states FINAL")}
    assert related == {s.series_uid: s.instances for s in c.series if s.instances}

    # The report asks ClickHouse the same questions as DuckDB.
    source = ClickHouseSource(settings.clickhouse.url, db)
    report = build_report(source).sections
    assert report["totals"][0]["instances"] == 90 and report["totals"][0]["studies"] == 3
    assert sum(r["instances"] for r in report["per_modality"]) == 90
    assert "unknown" not in {r["modality"] for r in report["per_modality"]}
    assert sum(r["n"] for r in report["latency_per_day"]) == 90
    assert report["dead_letters"] == []


def test_broken_messages_are_rejected_with_a_reason_and_the_consumer_goes_on(clickhouse: tuple[Settings, ClickHouseHTTP]) -> None:
    settings, client = clickhouse
    db = settings.clickhouse.database
    client.apply(clickhouse_ddl(settings, legacy=True))
    good_before = [_receipt(i) for i in range(3)]
    good_after = [_receipt(i, image_type_like="\\PRIMARY") for i in range(10, 14)]
    no_date = encode(_receipt(99)).replace(b'"study_date":"2023-12-31"', b'"study_date":"31.12.2023x"')
    broken = [b"not json at all", b'{"trace_id": 1}', no_date]
    dlq_event = AuditEvent(
        event_id=CodedValue(code="110100", scheme="DCM", meaning="Application Activity"), event_action="E",
        event_date_time=dt.datetime(2024, 3, 4, 5, 6, 7, 5), event_outcome=8, tenant_id="t1", audit_source_id="w1",
    )
    with Publisher(settings.kafka, settings.topics) as publisher:
        items = [(None, encode(e), None) for e in good_before] + [(None, b, None) for b in broken]
        publisher.send_raw(settings.topics.log, items).raise_for_failures()
        publisher.send_raw(settings.topics.log, [(None, encode(e), None) for e in good_after]).raise_for_failures()
        publisher.send_audit([dlq_event]).raise_for_failures()

    wait_until("good receipts", lambda: _count(client, db, "receipts") >= 7)
    wait_until("rejected receipts", lambda: _count(client, db, "receipts_rejected") >= 3)
    assert _count(client, db, "receipts") == 7
    reasons = {r["raw"]: r["reason"] for r in client.rows(f"SELECT raw, reason FROM {db}.receipts_rejected")}
    assert reasons == {
        "not json at all": "not a JSON object",
        '{"trace_id": 1}': "trace_id: missing, null or not a valid str",
        no_date.decode(): "study_date: missing, null or not a valid date",
    }
    paths = {r["file_path"] for r in client.rows(f"SELECT file_path FROM {db}.receipts")}
    assert paths == {e.file_path for e in good_before + good_after}  # the backslash survived
    wait_until("audit event", lambda: _count(client, db, "audit_events") >= 1)
    row = client.rows(f"SELECT event_outcome, event_date_time_text, event_id FROM {db}.audit_events")[0]
    assert row["event_outcome"] == 8 and row["event_date_time_text"] == "2024-03-04T05:06:07.000005"
    assert '"code":"110100"' in row["event_id"]
