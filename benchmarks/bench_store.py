"""PostgreSQL batch writes: PgStore.write_batch versus row-by-row INSERTs.

    python benchmarks/bench_store.py [--batches 40] [--batch-size 500] [--series 2]
                                     [--baseline-batches 8] [--writers 1]

Each batch is what the consumer hands the store for ``--batch-size`` store
events: one receipt, one series state and one instance row per event (the
states of a series repeat, as the consumer passes them), over ``--series``
series of a new study. Every instance is new, so every row is an insert; a
replay of the first batches is timed too (the idempotent path).

The baseline writes the same kind of batch the naive way: one transaction
per batch, one ``INSERT ... ON CONFLICT DO UPDATE`` statement per row
(prepared by psycopg after a few executions), then one count per series, as
the reference's ``save_*_list`` do. Both run in the same process, against the
same server, into a scratch database that is dropped at the end.

Needs the local stack (``dicomflow stack up``) or any PostgreSQL that the
``DICOMFLOW_DATABASE_*`` settings reach with a role allowed to create databases.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec
import psycopg
from psycopg import sql

from dicomflow import models
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import DatabaseSettings, load_settings
from dicomflow.store import PgStore

Batch = tuple[list[DicomStoreMeta], list[DicomStateMeta], list[DicomImageMeta]]


def make_batches(count: int, size: int, series: int, tag: str) -> list[Batch]:
    """``count`` batches of ``size`` instances each, a new study per batch."""
    now = models.now()
    out: list[Batch] = []
    for b in range(count):
        study = f"1.2.826.0.1.3680043.8.498.{tag}.{b}"
        receipts, states, images = [], [], []
        for i in range(size):
            se = f"{study}.{i % series + 1}"
            sop = f"{se}.{i + 1}"
            receipts.append(DicomStoreMeta(
                trace_id=str(uuid.uuid4()), worker_node_id="bench", tenant_id="bench", patient_id=f"P{b}",
                study_uid=study, series_uid=se, sop_uid=sop, file_size=525_000, file_path=f"/data/bench/{study}/{se}/{sop}.dcm",
                transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1, created_time=now,
                series_uid_hash=models.uid_hash(se), study_uid_hash=models.uid_hash(study), accession_number=f"A{b}",
                target_ts="1.2.840.10008.1.2.1", study_date=dt.date(2024, 5, 6), transfer_status="NoNeedTransfer",
                source_ip="10.0.0.7", source_ae="CT_SCANNER_1",
            ))
            states.append(DicomStateMeta(
                tenant_id="bench", patient_id=f"P{b}", study_uid=study, series_uid=se,
                study_uid_hash=models.uid_hash(study), series_uid_hash=models.uid_hash(se), study_date_origin="20240506",
                patient_name="Doe^Jane", patient_sex="F", patient_birth_date=dt.date(1970, 1, 2), patient_age="054Y",
                patient_size=1.68, patient_weight=61.5, study_date=dt.date(2024, 5, 6), study_time=dt.time(7, 8, 9),
                accession_number=f"A{b}", study_id="1", study_description="CT CHEST", modality="CT",
                series_number=i % series + 1, series_date=dt.date(2024, 5, 6), series_time=dt.time(7, 9),
                series_description="AXIAL", body_part_examined="CHEST", protocol_name="CHEST",
                created_time=now, updated_time=now,
            ))
            images.append(DicomImageMeta(
                tenant_id="bench", patient_id=f"P{b}", study_uid=study, series_uid=se, sop_uid=sop,
                study_uid_hash=models.uid_hash(study), series_uid_hash=models.uid_hash(se), instance_number=i + 1,
                content_date=dt.date(2024, 5, 6), content_time=dt.time(7, 9, 1), image_type="ORIGINAL\\PRIMARY\\AXIAL",
                image_orientation_patient="1\\0\\0\\0\\1\\0", image_position_patient=f"-200\\-200\\{-i * 1.25}",
                slice_thickness=1.25, spacing_between_slices=1.25, slice_location=-i * 1.25, samples_per_pixel=1,
                photometric_interpretation="MONOCHROME2", width=512, columns=512, bits_allocated=16, bits_stored=12,
                high_bit=11, pixel_representation=0, rescale_intercept=-1024.0, rescale_slope=1.0, rescale_type="HU",
                window_center="40", window_width="400", transfer_syntax_uid="1.2.840.10008.1.2.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2", image_status="ACTIVE", space_size=525_000,
                created_time=now, updated_time=now,
            ))
        out.append((receipts, states, images))
    return out


# --------------------------------------------------------------------------- baseline


def _insert(table: str, model: type[Any], key: Sequence[str], keep: Sequence[str] = ()) -> sql.Composed:
    cols = list(model.__struct_fields__)
    sets = [c for c in cols if c not in key and c not in keep]
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, cols)),
        sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        sql.SQL(", ").join(map(sql.Identifier, key)),
        sql.SQL(", ").join(sql.SQL("{0} = excluded.{0}").format(sql.Identifier(c)) for c in sets),
    )


SERIES = ("tenant_id", "study_uid", "series_uid")
INSERT_RECEIPT = _insert("dicom_object_meta", DicomStoreMeta, ("trace_id",))
INSERT_STATE = _insert("dicom_state_meta", DicomStateMeta, SERIES, ("created_time",))
INSERT_IMAGE = _insert("dicom_image_meta", DicomImageMeta, (*SERIES, "sop_uid"), ("created_time",))
RECOUNT = sql.SQL(
    "UPDATE dicom_state_meta SET series_related_instances = (SELECT count(*) FROM dicom_image_meta "
    "WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s) WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s"
)


def naive_write(conn: psycopg.Connection[Any], batch: Batch) -> None:
    """One statement per row, one transaction per batch (the states are merged first, or ON CONFLICT
    would update one row many times; the reference had that bug's opposite: it lost duplicates)."""
    receipts, states, images = batch
    astuple = msgspec.structs.astuple
    merged = {(s.tenant_id, s.study_uid, s.series_uid): s for s in states}
    with conn.transaction(), conn.cursor() as cur:
        for r in receipts:
            cur.execute(INSERT_RECEIPT, astuple(r))
        for i in images:
            cur.execute(INSERT_IMAGE, astuple(i))
        for key, s in merged.items():
            cur.execute(INSERT_STATE, astuple(s))
            cur.execute(RECOUNT, (*key, *key))


# --------------------------------------------------------------------------- runs


def timed(label: str, fn: Any, batches: list[Batch]) -> tuple[float, list[float]]:
    """Run ``fn`` on every batch; return total seconds and per-batch latencies."""
    latencies = []
    started = time.perf_counter()
    for batch in batches:
        t = time.perf_counter()
        fn(batch)
        latencies.append(time.perf_counter() - t)
    return time.perf_counter() - started, latencies


def report(label: str, instances: int, rows: int, seconds: float, latencies: list[float]) -> float:
    rate = instances / seconds
    lat = sorted(latencies)
    p95 = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
    print(
        f"{label:<34} {instances:>7} instances {seconds:7.2f} s  {rate:>9,.0f} instances/s"
        f"  {rows / seconds:>9,.0f} rows/s  batch p50 {statistics.median(lat) * 1000:6.1f} ms  p95 {p95 * 1000:6.1f} ms"
    )
    return rate


def rows_of(batches: list[Batch]) -> int:
    """Rows written: receipts + instances + distinct series states."""
    return sum(len(r) + len(i) + len({(s.tenant_id, s.study_uid, s.series_uid) for s in st}) for r, st, i in batches)


def concurrent(db: DatabaseSettings, batches: list[Batch], writers: int) -> tuple[float, list[float]]:
    """``writers`` stores in threads, each writing its share of the batches."""
    latencies: list[float] = []
    lock = threading.Lock()
    stores = [PgStore(db) for _ in range(writers)]
    for s in stores:  # connect and prepare outside the timing
        s.write_batch(*batches[0])

    def run(k: int) -> None:
        _, lat = timed("", lambda b: stores[k].write_batch(*b), batches[k + 1 :: writers])
        with lock:
            latencies.extend(lat)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(writers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for s in stores:
        s.close()
    return elapsed, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=40, help="batches written by PgStore (default 40)")
    parser.add_argument("--batch-size", type=int, default=500, help="store events per batch (default 500)")
    parser.add_argument("--series", type=int, default=2, help="series per batch (default 2)")
    parser.add_argument("--baseline-batches", type=int, default=8, help="batches written row by row (default 8)")
    parser.add_argument("--writers", type=int, default=1, help="also time N concurrent stores (default 1: skip)")
    opts = parser.parse_args()

    base = load_settings(None, os.environ).database
    if base.dsn:
        print("DICOMFLOW_DATABASE_DSN is set: give host/port/user instead, so a scratch database can be used", file=sys.stderr)
        return 2
    scratch = f"dicomflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    db = dataclasses.replace(base, dbname=scratch)
    try:
        store = PgStore(db)
        store.migrate()
        with psycopg.connect(db.conninfo(), autocommit=True) as conn:
            sync = conn.execute("SHOW synchronous_commit").fetchone()
        print(f"PostgreSQL {store.where}, synchronous_commit={sync[0] if sync else '?'}, "
              f"batch {opts.batch_size} events over {opts.series} series")

        warm = make_batches(2, opts.batch_size, opts.series, "warm")
        for b in warm:
            store.write_batch(*b)
        work = make_batches(opts.batches, opts.batch_size, opts.series, "store")
        seconds, lat = timed("store", lambda b: store.write_batch(*b), work)
        rate = report("PgStore.write_batch", opts.batches * opts.batch_size, rows_of(work), seconds, lat)
        replay = work[: max(1, opts.batches // 4)]
        seconds, lat = timed("replay", lambda b: store.write_batch(*b), replay)
        report("PgStore.write_batch (replay)", len(replay) * opts.batch_size, rows_of(replay), seconds, lat)
        store.close()

        if opts.writers > 1:
            extra = make_batches(opts.batches + 1, opts.batch_size, opts.series, "conc")
            seconds, lat = concurrent(db, extra, opts.writers)
            report(f"{opts.writers} concurrent stores", opts.batches * opts.batch_size, rows_of(extra[1:]), seconds, lat)

        naive = make_batches(opts.baseline_batches, opts.batch_size, opts.series, "naive")
        with psycopg.connect(db.conninfo(), autocommit=True) as conn:
            naive_write(conn, make_batches(1, opts.batch_size, opts.series, "naivewarm")[0])
            seconds, lat = timed("naive", lambda b: naive_write(conn, b), naive)
        base_rate = report("baseline: row-by-row INSERT", opts.baseline_batches * opts.batch_size, rows_of(naive), seconds, lat)
        print(f"ratio PgStore / row-by-row: {rate / base_rate:.1f}x")
        with psycopg.connect(db.conninfo(), autocommit=True) as conn:
            bad = conn.execute(
                "SELECT count(*) FROM dicom_state_meta s WHERE series_related_instances IS DISTINCT FROM "
                "(SELECT count(*) FROM dicom_image_meta i WHERE (i.tenant_id, i.study_uid, i.series_uid) = "
                "(s.tenant_id, s.study_uid, s.series_uid))"
            ).fetchone()
        if bad and bad[0]:
            print(f"ERROR: {bad[0]} series with a wrong series_related_instances", file=sys.stderr)
            return 1
        return 0
    finally:
        with psycopg.connect(base.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(scratch)))


if __name__ == "__main__":
    sys.exit(main())
