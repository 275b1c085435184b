"""The DuckDB warehouse sink against the real broker and a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import msgspec

from dicomflow.kafka import dlq
from dicomflow.kafka.reader import read_all
from dicomflow.models import encode
from dicomflow.settings import Settings, to_child_env
from dicomflow.warehouse.duck import open_for_reading
from dicomflow.warehouse.synthetic import instance_messages, state_message, traffic
from tests.integration.consumer_support import wait_for
from tests.integration.warehouse_support import (
    expected,
    produce,
    produce_raw,
    run_sink,
    start_sink,
    wh,
    wh_counts,
)

__all__ = ["wh"]


def test_counts_replay_and_versions(wh: Settings) -> None:
    t = traffic(300, series_size=20, run=1)
    produce(wh, t)
    summary = run_sink(wh)
    assert wh_counts(wh.warehouse.path) == expected(t)
    assert summary.consumed == t.count() and summary.dead_lettered == 0

    # Replayed events (the same messages published again, new offsets) add no rows.
    produce(wh, t)
    # A re-published state with a newer updated_time replaces the row; an older one does not.
    later = dt.datetime(2025, 3, 5, 8, 0, 0, 654321)
    produce_raw(wh, "dicom_state", [
        (b"k", encode(state_message(1, 0, 0, instances=20, updated=later, description="newer"))),
        (b"k", encode(state_message(1, 0, 1, instances=20, updated=dt.datetime(2020, 1, 1), description="older"))),
    ])
    summary = run_sink(wh)
    assert summary.consumed == t.count() + 2
    assert wh_counts(wh.warehouse.path) == expected(t)
    con = duckdb.connect(str(wh.warehouse.path), read_only=True)
    try:
        rows = dict(con.execute(
            "SELECT series_number, series_description FROM series_states WHERE study_uid = ? ORDER BY 1",
            [state_message(1, 0, 0, instances=1).study_uid],
        ).fetchall())
        assert rows[0] == "newer" and rows[1] == "Series 1"
        updated = con.execute(
            "SELECT updated_time FROM series_states WHERE series_description = 'newer'").fetchone()
        assert updated == (later,)  # fractional seconds kept
        # nulls stay null, values round-trip
        _store, image = instance_messages(1, 0, 0, 3)
        got = con.execute(
            "SELECT spacing_between_slices, pixel_data_location, content_time, space_size, created_time "
            "FROM instances WHERE sop_uid = ?", [image.sop_uid]).fetchone()
        assert got == (None, None, dt.time(10, 0, 0, 500000), image.space_size, image.created_time)
        assert con.execute("SELECT count(*) FROM receipts WHERE accession_number IS NULL").fetchone() == (
            sum(1 for _, v in t.messages["log"] if b'"accession_number":null' in v),)
        audit = con.execute("SELECT event_id->>'code', json_array_length(participant_objects) FROM audit_events LIMIT 1").fetchone()
        assert audit == ("110104", 1)
    finally:
        con.close()


def test_poison_on_each_topic_goes_to_its_dlq(wh: Settings) -> None:
    good = traffic(4, series_size=2, series_per_study=2, run=2)
    poison = {
        "log": b"{not json",
        "dicom_state": b'{"tenant_id": 5}',
        "dicom_image": msgspec.json.encode({"tenant_id": "t", "sop_uid": "x"}),
        "audit": b'{"event_id": {"code": "1", "meaning": "m"}, "event_action": "Z"}',
    }
    for attr, msgs in good.messages.items():
        half = len(msgs) // 2
        produce_raw(wh, attr, [*msgs[:half], (b"bad", poison[attr]), *msgs[half:]])
    summary = run_sink(wh)
    assert summary.dead_lettered == 4
    # the sink's own audit events about the 4 dead letters land in audit_events too
    assert wh_counts(wh.warehouse.path) == {**expected(good), "audit_events": good.studies + 4}
    con = duckdb.connect(str(wh.warehouse.path), read_only=True)
    try:
        sources = {r[0] for r in con.execute(
            "SELECT participant_objects->0->'details'->>'source' FROM audit_events WHERE event_outcome = 8").fetchall()}
    finally:
        con.close()
    assert len(sources) == 4 and all("@" in s for s in sources)
    for attr, value in poison.items():
        topic = getattr(wh.topics, attr)
        letters = read_all(wh.kafka, f"{topic}.dlq")
        assert [r.value for r in letters] == [value]
        h = dlq.headers_dict(letters[0].headers)
        assert h[dlq.HEADER_ERROR_CLASS] == "wire-format"
        assert h[dlq.HEADER_SOURCE_TOPIC] == topic and h[dlq.HEADER_REASON]
        assert letters[0].key == b"bad"
    # Their offsets count as consumed: a second run reads nothing new.
    again = run_sink(wh, until_idle_s=2.0)
    assert again.consumed == 0 and again.dead_lettered == 0


def test_sigkill_at_random_moments_leaves_exact_counts(wh: Settings, tmp_path: Path) -> None:
    import dataclasses

    wh = dataclasses.replace(wh, warehouse=dataclasses.replace(wh.warehouse, batch_max_messages=700, batch_max_ms=100))
    t = traffic(5000, series_size=50, run=3)
    assert t.count() >= 10000
    produce(wh, t)
    log = tmp_path / "sink.log"
    rng = random.Random(11)
    kills = 0
    for _ in range(4):
        proc = start_sink(wh, log, "--until-idle", "30")
        # let it join the group and write some batches, then kill it wherever it is
        time.sleep(rng.uniform(3.0, 6.0))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(30)
    proc = start_sink(wh, log, "--until-idle", "3")
    assert proc.wait(180) == 0, log.read_text()[-3000:]
    assert kills >= 3
    assert wh_counts(wh.warehouse.path) == expected(t), log.read_text()[-3000:]
    con = duckdb.connect(str(wh.warehouse.path), read_only=True)
    try:
        assert con.execute("SELECT sum(next_offset) FROM _offsets").fetchone() == (t.count(),)
    finally:
        con.close()


def test_second_writer_refused_and_snapshot_readable_while_running(wh: Settings, tmp_path: Path) -> None:
    t = traffic(200, run=4)
    produce(wh, t)
    proc = start_sink(wh, tmp_path / "sink.log", "--until-idle", "60")
    try:
        snap = wh.warehouse.snapshot_file()
        wait_for("a snapshot", lambda: snap.exists(), timeout_s=60)

        def snapshot_complete() -> bool:
            con = open_for_reading(wh)
            try:
                return int(con.execute("SELECT count(*) FROM instances").fetchone()[0]) == t.instances  # type: ignore[index]
            finally:
                con.close()

        wait_for("the snapshot to hold every instance", snapshot_complete, timeout_s=60, every_s=0.5)
        con = open_for_reading(wh)
        try:
            assert con.execute("SELECT count(*) FROM receipts").fetchone() == (t.instances,)
            assert con.execute("SELECT count(*) FROM _snapshot").fetchone() == (1,)
        finally:
            con.close()
        second = subprocess.run(
            [sys.executable, "-m", "dicomflow", "warehouse", "run", "--until-idle", "1"],
            env=to_child_env(wh, os.environ), capture_output=True, text=True, timeout=60,
        )
        assert second.returncode == 1
        assert str(wh.warehouse.path) in second.stderr and "already open for writing" in second.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    # the writer is gone: readers get the live file
    con = open_for_reading(wh)
    try:
        assert con.execute("SELECT count(*) FROM _offsets").fetchone()[0] > 0  # type: ignore[index]
        assert "_snapshot" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    finally:
        con.close()
