"""The consumer against the real broker, PostgreSQL and real DICOM files: counts, events, replay, poison."""

from __future__ import annotations

import os
import shutil
import signal
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import msgspec

from dicomflow.corpus import pydicom_sample
from dicomflow.kafka import dlq
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, decode, encode, md5_key, series_key
from dicomflow.pipeline.stats import CommittedBatch
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from tests.integration.consumer_support import (
    BackgroundService,
    committed_total,
    corpus,
    counts,
    expected_counts,
    key_counts,
    pipeline,
    publish,
    publish_raw,
    query,
    run_service,
    series_instance_counts,
    start_consume,
    topic,
    wait_for,
)

__all__ = ["pipeline"]  # the fixture, re-exported for pytest


def test_n_instances_give_exact_rows_and_one_event_per_instance_and_series_per_batch(pipeline: Settings) -> None:
    c = corpus(pipeline, 420, studies=3, series_per_study=4)
    publish(pipeline, c.events)
    batches: list[CommittedBatch] = []

    summary = run_service(pipeline, on_commit=batches.append)

    assert summary.instances == 420 and summary.dead_lettered == 0
    assert counts(pipeline.database) == expected_counts(c)
    assert series_instance_counts(pipeline.database) == {s.series_uid: s.instances for s in c.series}
    # batches: at most batch_max_messages each, all records accounted for
    assert len(batches) >= 5
    assert all(b.records <= 100 for b in batches) and sum(b.records for b in batches) == 420

    images = topic(pipeline, pipeline.topics.dicom_image)
    assert len(images) == 420
    expected_keys = {md5_key(e.tenant_id, e.patient_id, e.study_uid, e.series_uid, e.sop_uid).encode() for e in c.events}
    assert set(key_counts(images)) == expected_keys and max(key_counts(images).values()) == 1
    sops = {decode(r.value or b"", DicomImageMeta).sop_uid for r in images}
    assert sops == {e.sop_uid for e in c.events}

    states = topic(pipeline, pipeline.topics.dicom_state)
    assert len(states) == sum(len(b.series) for b in batches)  # one state event per series per batch
    by_series: dict[str, list[DicomStateMeta]] = defaultdict(list)
    for r in sorted(states, key=lambda r: (r.partition, r.offset)):
        s = decode(r.value or b"", DicomStateMeta)
        assert r.key == series_key(s.tenant_id, s.patient_id, s.study_uid, s.series_uid).encode()
        by_series[s.series_uid].append(s)
    for info in c.series:
        counts_seen = [s.series_related_instances or 0 for s in by_series[info.series_uid]]
        assert counts_seen == sorted(counts_seen), "state events of a series must come in order"
        assert counts_seen[-1] == info.instances

    assert committed_total(pipeline) == 420
    assert topic(pipeline, pipeline.topics.dlq) == []


def test_replayed_store_events_add_no_rows_and_change_no_counts(pipeline: Settings) -> None:
    c = corpus(pipeline, 150, studies=2, series_per_study=3)
    publish(pipeline, c.events)
    run_service(pipeline)
    before = counts(pipeline.database)
    created_before = query(pipeline.database, "SELECT series_uid, created_time FROM dicom_state_meta ORDER BY 1")
    receipts_before = query(pipeline.database, "SELECT trace_id, created_time FROM dicom_object_meta ORDER BY 1")

    publish(pipeline, c.events)  # the very same store events again
    summary = run_service(pipeline)

    assert summary.instances == 150
    assert counts(pipeline.database) == before == expected_counts(c)
    assert series_instance_counts(pipeline.database) == {s.series_uid: s.instances for s in c.series}
    assert query(pipeline.database, "SELECT series_uid, created_time FROM dicom_state_meta ORDER BY 1") == created_before
    assert query(pipeline.database, "SELECT trace_id, created_time FROM dicom_object_meta ORDER BY 1") == receipts_before
    assert committed_total(pipeline) == 300


def test_poison_messages_go_to_the_dlq_with_their_reason_and_good_ones_are_persisted(
    pipeline: Settings, tmp_path: Path
) -> None:
    root = Path(pipeline.storage.root)
    c = corpus(pipeline, 40, studies=1, series_per_study=2)
    good = c.events
    template = good[0]

    def event_for(path: Path | str, sop: str) -> DicomStoreMeta:
        return msgspec.structs.replace(template, trace_id=f"{sop[-8:]:0>8}-0000-4000-8000-000000000000", sop_uid=sop, file_path=str(path))

    missing = event_for(root / "default" / "gone.dcm", "1.2.3.1")
    outside_file = tmp_path / "outside.dcm"
    shutil.copy(pydicom_sample("CT_small.dcm"), outside_file)
    outside = event_for(root / ".." / "outside.dcm", "1.2.3.2")
    not_dicom_path = root / "default" / "notes.dcm"
    not_dicom_path.write_bytes(b"this is not a DICOM file, just some text\n" * 10)
    not_dicom = event_for(not_dicom_path, "1.2.3.3")
    truncated_path = root / "default" / "truncated.dcm"
    truncated_path.write_bytes(Path(good[1].file_path).read_bytes()[:700])
    truncated = event_for(truncated_path, good[1].sop_uid)

    poison_events = {"file-missing": missing, "outside-storage-root": outside}
    raw = [
        (b"key-json", b'{"trace_id": "0f0f", "tenant_id": "t-bad", "study_uid": '),  # invalid JSON
        (b"key-schema", encode(template).replace(b'"file_size":', b'"file_size_x":')),  # wrong schema
        (b"key-missing", encode(missing)),
        (b"key-outside", encode(outside)),
        (b"key-not-dicom", encode(not_dicom)),
        (b"key-truncated", encode(truncated)),
    ]
    publish(pipeline, good[:20])
    publish_raw(pipeline, raw)
    publish(pipeline, good[20:])

    summary = run_service(pipeline)

    assert summary.instances == 40 and summary.dead_lettered == 6
    assert counts(pipeline.database) == expected_counts(c)
    letters = topic(pipeline, pipeline.topics.dlq)
    assert len(letters) == 6
    by_key = {r.key: r for r in letters}
    assert {k for k, _ in raw} == set(by_key)
    classes = {}
    for key, value in raw:
        letter = by_key[key]
        assert letter.value == value  # original bytes, untouched
        h = dlq.headers_dict(list(letter.headers))
        assert h[dlq.HEADER_SOURCE_TOPIC] == pipeline.topics.main
        assert int(h[dlq.HEADER_SOURCE_OFFSET]) >= 0 and h[dlq.HEADER_SOURCE_PARTITION].isdigit()
        assert h[dlq.HEADER_REASON]
        classes[key] = h[dlq.HEADER_ERROR_CLASS]
    assert classes == {
        b"key-json": "wire-format",
        b"key-schema": "wire-format",
        b"key-missing": "file-missing",
        b"key-outside": "outside-storage-root",
        b"key-not-dicom": "unreadable-dicom",
        b"key-truncated": "unreadable-dicom",
    }
    assert "file_size" in dlq.headers_dict(list(by_key[b"key-schema"].headers))[dlq.HEADER_REASON]
    for name, event in poison_events.items():
        assert event.sop_uid not in {r[0] for r in query(pipeline.database, "SELECT sop_uid FROM dicom_image_meta")}, name

    audits = topic(pipeline, pipeline.topics.audit)
    assert len(audits) == 6
    assert {r.key for r in audits} == {b"default"}
    sources = {
        f"{pipeline.topics.main}[{h[dlq.HEADER_SOURCE_PARTITION]}]@{h[dlq.HEADER_SOURCE_OFFSET]}"
        for h in (dlq.headers_dict(list(r.headers)) for r in letters)
    }
    audit_events = [decode(r.value or b"", AuditEvent) for r in audits]
    assert {a.participant_objects[0].details["source"] for a in audit_events} == sources
    assert all(a.event_outcome == 8 and a.event_outcome_description for a in audit_events)
    assert committed_total(pipeline) == 46


def test_metrics_and_health_are_served_while_consuming(pipeline: Settings) -> None:
    import dataclasses

    port = free_port()
    settings = dataclasses.replace(pipeline, metrics=dataclasses.replace(pipeline.metrics, port=port))
    c = corpus(settings, 60, studies=1, series_per_study=2)
    publish(settings, c.events)
    publish_raw(settings, [(b"k", b"not json")])
    bg = BackgroundService(settings, until_idle_s=30.0).start()
    try:
        wait_for("all records committed", lambda: bg.service.loop.summary.committed_records == 61, 60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
            assert resp.status == 200
            assert b'"postgresql": "ok"' in resp.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert "dicomflow_consumer_events_consumed_total 61.0" in text
        assert "dicomflow_consumer_instances_persisted_total 60.0" in text
        assert 'dicomflow_consumer_events_failed_total{error_class="wire-format"} 1.0' in text
        assert "dicomflow_consumer_dlq_messages_total 1.0" in text
        assert "dicomflow_consumer_batch_size_bucket" in text and "dicomflow_consumer_parse_seconds_count" in text
        lags = [line for line in text.splitlines() if line.startswith("dicomflow_consumer_lag{")]
        assert lags and all(line.endswith(" 0.0") and settings.topics.main in line for line in lags), lags
    finally:
        bg.service.stop()
        bg.join(60)
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
        raise AssertionError("the server should be gone after the consumer stopped")
    except urllib.error.URLError:
        pass


def test_stop_finishes_and_commits_the_batch_in_hand(pipeline: Settings) -> None:
    c = corpus(pipeline, 300, studies=1, series_per_study=3)
    publish(pipeline, c.events)
    batches: list[CommittedBatch] = []
    bg = BackgroundService(pipeline, on_commit=batches.append).start()  # no idle limit: runs until stopped
    wait_for("a first batch", lambda: len(batches) >= 1, 60, every_s=0.01)
    bg.service.stop()
    summary = bg.join(60)
    assert summary.stopped_because == "stop requested"
    # what was committed is exactly what is in the database: nothing half done
    assert counts(pipeline.database)["dicom_image_meta"] == summary.instances == committed_total(pipeline)
    assert 0 < summary.instances <= 300


def test_consume_command_stops_at_max_messages_and_on_sigterm(pipeline: Settings, tmp_path: Path) -> None:
    c = corpus(pipeline, 1800, studies=3, series_per_study=4)
    publish(pipeline, c.events[:250])
    proc = start_consume(pipeline, tmp_path / "consume-1.log", "--max-messages", "120")
    assert proc.wait(120) == 0, (tmp_path / "consume-1.log").read_text()
    assert counts(pipeline.database)["dicom_image_meta"] == 120
    assert committed_total(pipeline) == 120

    publish(pipeline, c.events[250:])
    proc = start_consume(pipeline, tmp_path / "consume-2.log")
    wait_for("consumption under way", lambda: counts(pipeline.database)["dicom_image_meta"] >= 400, 120, every_s=0.02)
    os.killpg(proc.pid, signal.SIGTERM)  # the whole group, parse workers included, mid-stream
    assert proc.wait(60) == 0, (tmp_path / "consume-2.log").read_text()
    log = (tmp_path / "consume-2.log").read_text()
    assert "stop requested" in log
    # the batch in hand was finished and committed: offsets and rows agree exactly, nothing dead-lettered
    rows = counts(pipeline.database)["dicom_image_meta"]
    assert committed_total(pipeline) == rows
    assert topic(pipeline, pipeline.topics.dlq) == []
