"""Warehouse sink throughput: Kafka → DuckDB (Arrow bulk path) versus executemany row inserts.

    python benchmarks/bench_warehouse.py [--instances 100000] [--baseline-rows 500]

Publishes ``--instances`` instances' worth of mixed events to fresh topics
(a receipt and an instance event per instance, a state per series of 50, an
audit event per study: about 2.03 events per instance, so the default is
over 200,000 events), then times ``WarehouseSink`` from its start to the last
batch committed (group join included, idle wait excluded).

The baseline inserts the same decoded rows into a fresh DuckDB file the
naive way: ``executemany`` of one parameterised INSERT ... ON CONFLICT per
row, in one transaction per table. It is measured on a sample of
``--baseline-rows`` rows per table (it is too slow for the whole run) and its
per-event rate is extrapolated; the ratio compares events/s with events/s.
Both run in the same process on the same machine. Targets: >= 30,000 events/s
(steady state: from the first committed batch to the last, printed beside the
rate with the start included)
and >= 100x executemany.

The machine may be shared: the sink's CPU time (all its threads: decoding,
DuckDB, librdkafka) is printed too, as events per CPU-second, which moves far
less with the load of other processes than events per wall-clock second.
``--profile FILE`` writes a cProfile of the sink's run (its main thread).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, decode
from dicomflow.settings import load_settings
from dicomflow.warehouse.arrow import to_arrow
from dicomflow.warehouse.duck import connect, open_writer, upsert_sql
from dicomflow.warehouse.schema import table
from dicomflow.warehouse.sink import SinkSummary, WarehouseSink
from dicomflow.warehouse.synthetic import traffic

TARGET_RATE = 30_000
TARGET_RATIO = 100.0


def baseline(tr_messages: dict[str, list[tuple[bytes, bytes]]], rows: int, folder: Path) -> tuple[int, float]:
    """executemany of single-row upserts over a sample; returns (rows, seconds)."""
    from dicomflow.settings import WarehouseSettings

    con = open_writer(WarehouseSettings(path=folder / "baseline.duckdb", threads=0))
    total_rows = 0
    total_s = 0.0
    for attr, name, model in (("log", "receipts", DicomStoreMeta), ("dicom_image", "instances", DicomImageMeta),
                              ("dicom_state", "series_states", DicomStateMeta), ("audit", "audit_events", AuditEvent)):
        t = table(name)
        sample = [decode(v, model) for _, v in tr_messages[attr][:rows]]
        # Same value conversion as the bulk path (Arrow), so only the insert method differs.
        arrow = to_arrow(t, sample, list(range(len(sample)))).drop_columns(["_seq"])
        values = [tuple(r.values()) for r in arrow.to_pylist()]
        placeholders = ", ".join("?" for _ in t.columns)
        cols = ", ".join(f'"{c}"' for c in t.column_names)
        full = upsert_sql(t, "x")
        conflict = full[full.index(" ON CONFLICT"):]
        stmt = f'INSERT INTO "{t.name}" ({cols}) VALUES ({placeholders}) {conflict}'
        started = time.perf_counter()
        con.execute("BEGIN")
        con.executemany(stmt, values)
        con.execute("COMMIT")
        total_s += time.perf_counter() - started
        total_rows += len(values)
    con.close()
    return total_rows, total_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=100_000)
    parser.add_argument("--baseline-rows", type=int, default=500, help="rows per table for the executemany sample")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the sink's run to this file")
    opts = parser.parse_args()

    base = load_settings(None, os.environ)
    sfx = uuid.uuid4().hex[:8]
    t = base.topics
    topics = dataclasses.replace(
        t, main=f"bw_main_{sfx}", log=f"bw_log_{sfx}", dicom_state=f"bw_state_{sfx}", dicom_image=f"bw_image_{sfx}",
        audit=f"bw_audit_{sfx}", dlq=f"bw_main_{sfx}.dlq", partitions=3,
    )
    folder = Path(tempfile.mkdtemp(prefix="bench_warehouse_"))
    settings = dataclasses.replace(
        base, topics=topics,
        warehouse=dataclasses.replace(base.warehouse, path=folder / "warehouse.duckdb", group_id=f"bw_{sfx}",
                                      snapshot_interval_s=0),
    )
    create_topics(settings.kafka, topics)
    try:
        tr = traffic(opts.instances)
        events = tr.count()
        with Publisher(settings.kafka, topics) as p:
            for attr, msgs in tr.messages.items():
                p.send_raw(getattr(topics, attr), [(k, v, None) for k, v in msgs]).raise_for_failures()
        print(f"published {events:,} events ({tr.instances:,} receipts, {tr.instances:,} instances, "
              f"{tr.series:,} states, {tr.studies:,} audit)")

        last_commit = [0.0]
        commits: list[tuple[float, int]] = []  # (when, events consumed so far) at each committed batch

        def on_batch(s: SinkSummary) -> None:
            last_commit[0] = time.perf_counter()
            commits.append((last_commit[0], s.consumed))

        sink = WarehouseSink(settings, until_idle_s=3.0, on_batch=on_batch)
        profile = cProfile.Profile() if opts.profile else None
        cpu_started = time.process_time()
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        summary = sink.run()
        if profile is not None:
            profile.disable()
            profile.dump_stats(opts.profile)
        seconds = last_commit[0] - started
        cpu_s = time.process_time() - cpu_started
        assert summary.consumed == events, f"consumed {summary.consumed} of {events}"
        con = connect(settings.warehouse.path, read_only=True)
        counted = sum(int(con.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0])  # type: ignore[index]
                      for n in ("receipts", "instances", "series_states", "audit_events"))
        con.close()
        assert counted == events, f"{counted} rows for {events} events"
        rate = events / seconds
        print(f"sink: {events:,} events in {seconds:.2f} s = {rate:,.0f} events/s "
              f"({summary.batches} batches, group join included)")
        if len(commits) >= 3:
            # Throughput once the sink runs: from the first committed batch to the last, so the
            # one-time start (DuckDB file, group join and assignment) is left out.
            (t0, n0), (t1, n1) = commits[0], commits[-1]
            steady = (n1 - n0) / (t1 - t0)
            print(f"steady state: {n1 - n0:,} events in {t1 - t0:.2f} s = {steady:,.0f} events/s "
                  f"(first batch committed {t0 - started:.2f} s after the start)")
            rate = steady
        print(f"sink CPU: {cpu_s:.2f} s (all threads, the final idle wait included) = "
              f"{events / cpu_s:,.0f} events per CPU-second")

        rows, base_s = baseline(tr.messages, opts.baseline_rows, folder)
        base_rate = rows / base_s
        print(f"executemany baseline: {rows:,} rows (sample of {opts.baseline_rows:,} per table) in {base_s:.2f} s "
              f"= {base_rate:,.0f} rows/s (extrapolated per event)")
        ratio = rate / base_rate
        ok_rate, ok_ratio = rate >= TARGET_RATE, ratio >= TARGET_RATIO
        print(f"ratio: {ratio:,.1f}x executemany")
        print(f"target >= {TARGET_RATE:,} events/s: {'met' if ok_rate else 'NOT met'}; "
              f"target >= {TARGET_RATIO:.0f}x: {'met' if ok_ratio else 'NOT met'}")
        return 0 if ok_rate and ok_ratio else 1
    finally:
        try:
            delete_topics(settings.kafka, topics.all())
        except Exception:  # noqa: BLE001 - cleanup is best effort; the figures are already printed
            pass
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
