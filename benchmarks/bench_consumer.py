"""End to end: storage_queue → PostgreSQL rows + acknowledged derived events, committed.

    python benchmarks/bench_consumer.py [--instances 10000] [--rate 500] [--rate-seconds 10]
                                        [--baseline-instances 500] [--workers 0]
                                        [--batch-max-messages 500] [--batch-max-ms 500]
                                        [--brokers 3]

Three phases, each with fresh topics and the same scratch database:

1. **throughput**: ``--instances`` store events (real DICOM files written
   under a scratch storage root) are published first; the consumer then
   drains the backlog. Measured from the first record received to the last
   batch's offset commit, i.e. parse + PostgreSQL commit + state and
   instance events acknowledged + offsets committed, for every instance.
2. **latency at a steady rate**: a separate process publishes store events at
   ``--rate`` per second for ``--rate-seconds``, stamping each event's
   ``created_time`` as it sends it; the consumer runs concurrently. Latency
   is each instance's PostgreSQL commit time minus its ``created_time``
   (same host clock), reported as p50 / p99 / max.
3. **baseline**: the same consumer with batches of one message (one
   transaction, one acknowledgement round and one commit per message,
   parsing in one worker), over ``--baseline-instances``, to show what
   batching buys; the ratio is printed.
4. **storage backends** (``--s3-instances``, default 5,000; 0 skips it): the
   throughput phase over that many instances, 3 rounds alternating the
   filesystem and the s3 backend (the stack's S3Proxy, started for it, the
   same files uploaded as objects; headers read by ranged GETs), medians and
   their ratio; target on s3 >= 1,500 instances/s (``benchmarks/_consumer_s3.py``).
5. with ``--brokers 3``: the throughput phase again, on a private
   three-broker cluster (topics with replication factor 3 and
   min.insync.replicas 2, acks=all as always), reported against phase 1's
   single-broker figure (a comparison, not a target).

Needs the local stack (``dicomflow stack up``). Generated files go under
``/tmp`` and are removed at the end, as are the topics and the database.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import msgspec
import psycopg
from psycopg import sql

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta, decode, encode, now
from dicomflow.pipeline.service import ConsumerService
from dicomflow.pipeline.stats import CommittedBatch
from dicomflow.settings import Settings, load_settings
from dicomflow.store import PgStore


def scratch_settings(base: Settings, root: Path, dbname: str, args: argparse.Namespace, tag: str) -> Settings:
    """Settings with fresh topics and group, the scratch database and storage root."""
    t = base.topics
    topics = dataclasses.replace(
        t, main=f"bench_storage_{tag}", log=f"bench_log_{tag}", dicom_state=f"bench_state_{tag}",
        dicom_image=f"bench_image_{tag}", audit=f"bench_audit_{tag}", dlq=f"bench_storage_{tag}.dlq",
        consumer_group_id=f"bench_{tag}", partitions=args.partitions,
    )
    consumer = dataclasses.replace(
        base.consumer, batch_max_messages=args.batch_max_messages, batch_max_ms=args.batch_max_ms,
        parse_workers=args.workers,
    )
    return dataclasses.replace(
        base, topics=topics, consumer=consumer, database=dataclasses.replace(base.database, dbname=dbname),
        storage=dataclasses.replace(base.storage, root=root), worker_node_id="bench-consumer",
    )


def publish_all(settings: Settings, events: list[DicomStoreMeta]) -> None:
    with Publisher(settings.kafka, settings.topics) as publisher:
        for i in range(0, len(events), 5000):
            publisher.send_store_events(events[i : i + 5000], with_receipt=False).raise_for_failures()


def paced_publisher(settings: Settings, payloads: list[bytes], rate: float) -> None:
    """Child process: send the events at ``rate`` per second, stamping created_time at send time."""
    events = [decode(p, DicomStoreMeta) for p in payloads]
    tick = 0.02
    per_tick = rate * tick
    with Publisher(settings.kafka, settings.topics) as publisher:
        start = time.monotonic()
        sent = 0
        while sent < len(events):
            due = min(len(events), int((time.monotonic() - start) * rate) + 1)
            if due > sent:
                chunk = [msgspec.structs.replace(e, created_time=now()) for e in events[sent:due]]
                publisher.send_store_events(chunk, with_receipt=False).raise_for_failures()
                sent = due
            next_at = start + (sent + per_tick) / rate
            time.sleep(max(0.0, min(tick, next_at - time.monotonic())))


def run_consumer(settings: Settings, expected: int) -> tuple[list[CommittedBatch], ConsumerService]:
    batches: list[CommittedBatch] = []
    service = ConsumerService(settings, max_messages=expected, on_commit=batches.append)
    summary = service.run()
    if summary.instances != expected:
        raise SystemExit(f"expected {expected} instances, the consumer committed {summary.instances}")
    return batches, service


def stage_means(service: ConsumerService) -> str:
    """Mean seconds per batch of parse and PostgreSQL, from the consumer's own histograms."""
    reg = service.registry
    out = []
    for name, label in (("parse", "parse"), ("store", "PostgreSQL"), ("batch", "whole batch")):
        total = reg.get_sample_value(f"dicomflow_consumer_{name}_seconds_sum") or 0.0
        count = reg.get_sample_value(f"dicomflow_consumer_{name}_seconds_count") or 0.0
        out.append(f"{label} {total / count * 1000:.0f} ms" if count else f"{label} -")
    return "per batch: " + ", ".join(out)


def check_rows(settings: Settings, expected: int) -> None:
    with psycopg.connect(settings.database.conninfo()) as conn:
        row = conn.execute("SELECT count(*) FROM dicom_image_meta").fetchone()
    if row is None or row[0] != expected:
        raise SystemExit(f"expected {expected} instance rows, found {row}")


def throughput(batches: list[CommittedBatch], service: ConsumerService) -> tuple[int, float]:
    """Instances, and seconds from the first record received to the last offsets committed."""
    n = sum(b.instances for b in batches)
    first = service.loop.summary.first_record_s
    assert first is not None
    return n, max(b.committed_s for b in batches) - first


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100.0 * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--instances", type=int, default=10000, help="instances in the throughput phase")
    parser.add_argument("--rate", type=float, default=500.0, help="store events per second in the latency phase")
    parser.add_argument("--rate-seconds", type=float, default=10.0, help="length of the latency phase")
    parser.add_argument("--baseline-instances", type=int, default=500, help="instances for the one-message baseline")
    parser.add_argument("--workers", type=int, default=0, help="parse processes (0: one per core)")
    parser.add_argument("--batch-max-messages", type=int, default=500)
    parser.add_argument("--batch-max-ms", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--series-per-study", type=int, default=5)
    parser.add_argument("--brokers", type=int, default=1,
                        help="also run the throughput phase on a private cluster of this many brokers (RF 3)")
    parser.add_argument("--s3-instances", type=int, default=5000,
                        help="instances of the storage-backend rows (filesystem vs s3 on the stack's S3Proxy, "
                             "3 alternated rounds; 0: skip them)")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    base = load_settings(None, os.environ)  # DICOMFLOW_STACK_DIR etc.: the stack the run is given
    run_id = uuid.uuid4().hex[:8]
    dbname = f"dicomflow_bench_{run_id}"
    work = Path(tempfile.mkdtemp(prefix="dicomflow-bench-consumer-"))
    admin = base.database.conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    created_topics: list[Settings] = []
    try:
        phase = scratch_settings(base, work, dbname, args, f"{run_id}_t")
        store = PgStore(phase.database)
        store.migrate()
        store.close()
        n_rate = int(args.rate * args.rate_seconds)
        t0 = time.perf_counter()
        n_cluster = args.instances if args.brokers > 1 else 0
        corpus = make_corpus(work, args.instances + n_rate + args.baseline_instances + n_cluster, studies=args.studies,
                             series_per_study=args.series_per_study, tenant_id="bench")
        events = corpus.events
        print(f"corpus: {len(events)} DICOM files ({len(corpus.series)} series) written in {time.perf_counter() - t0:.1f} s")
        print(f"settings: batches of {args.batch_max_messages} messages / {args.batch_max_ms} ms, "
              f"{args.workers or multiprocessing.cpu_count()} parse workers, {args.partitions} partitions")

        # 1. throughput over a backlog
        create_topics(phase.kafka, phase.topics)
        created_topics.append(phase)
        publish_all(phase, events[: args.instances])
        batches, service = run_consumer(phase, args.instances)
        check_rows(phase, args.instances)
        n, elapsed = throughput(batches, service)
        rate_fast = n / elapsed
        print(f"throughput: {n} instances in {elapsed:.2f} s = {rate_fast:,.0f} instances/s "
              f"({len(batches)} batches, mean {statistics.mean(b.records for b in batches):.0f} per batch; "
              f"{stage_means(service)})")

        # 2. latency at a steady rate
        steady = scratch_settings(base, work, dbname, args, f"{run_id}_r")
        create_topics(steady.kafka, steady.topics)
        created_topics.append(steady)
        payloads = [encode(e) for e in events[args.instances : args.instances + n_rate]]
        collected: list[CommittedBatch] = []
        service = ConsumerService(steady, max_messages=n_rate, on_commit=collected.append)
        runner = threading.Thread(target=service.run, name="consumer")
        runner.start()
        deadline = time.monotonic() + 60
        while len(service.loop.assignment()) < args.partitions:  # joined, workers warm: start the clock
            if time.monotonic() > deadline or not runner.is_alive():
                raise SystemExit("the consumer did not get its partitions within 60 s")
            time.sleep(0.05)
        ctx = multiprocessing.get_context("spawn")
        sender = ctx.Process(target=paced_publisher, args=(steady, payloads, args.rate))
        sender.start()
        runner.join()
        sender.join(60)
        latencies = [(b.persisted_at - c).total_seconds() for b in collected for c in b.created]
        to_commit = [(b.committed_at - c).total_seconds() for b in collected for c in b.created]
        print(f"latency at {args.rate:.0f} instances/s over {len(latencies)} instances, store event created -> "
              f"PostgreSQL commit: p50 {pct(latencies, 50) * 1000:.0f} ms, p99 {pct(latencies, 99) * 1000:.0f} ms, "
              f"max {max(latencies) * 1000:.0f} ms; -> offsets committed: p50 {pct(to_commit, 50) * 1000:.0f} ms, "
              f"p99 {pct(to_commit, 99) * 1000:.0f} ms ({len(collected)} batches, mean "
              f"{statistics.mean(b.records for b in collected):.0f} per batch; {stage_means(service)})")

        # 3. baseline: one message per batch
        base_phase = scratch_settings(base, work, dbname, args, f"{run_id}_b")
        base_phase = dataclasses.replace(
            base_phase, consumer=dataclasses.replace(base_phase.consumer, batch_max_messages=1, parse_workers=1)
        )
        create_topics(base_phase.kafka, base_phase.topics)
        created_topics.append(base_phase)
        publish_all(base_phase, events[args.instances + n_rate : args.instances + n_rate + args.baseline_instances])
        base_batches, base_service = run_consumer(base_phase, args.baseline_instances)
        bn, belapsed = throughput(base_batches, base_service)
        rate_base = bn / belapsed
        print(f"baseline (one message per batch, one parse worker): {bn} instances in {belapsed:.2f} s = "
              f"{rate_base:,.0f} instances/s")
        print(f"ratio: batched / one-at-a-time = {rate_fast / rate_base:.1f}x")
        if args.brokers > 1:
            from _cluster import private_cluster

            with private_cluster(base, args.brokers) as clustered:
                cl = scratch_settings(clustered, work, dbname, args, f"{run_id}_c")
                create_topics(cl.kafka, cl.topics)
                publish_all(cl, events[len(events) - n_cluster :])
                cl_batches, cl_service = run_consumer(cl, n_cluster)
                check_rows(cl, len(events))  # the same database holds every phase's rows
                cn, celapsed = throughput(cl_batches, cl_service)
                rate_cluster = cn / celapsed
            print(f"throughput on {args.brokers} brokers (RF 3, min ISR 2, acks=all): {cn} instances in "
                  f"{celapsed:.2f} s = {rate_cluster:,.0f} instances/s; {rate_cluster / rate_fast:.2f}x the "
                  f"single-broker {rate_fast:,.0f}/s ({stage_means(cl_service)})")
        if args.s3_instances:
            from _consumer_s3 import s3_rounds

            s3_rounds(base, work, args, events[: min(args.s3_instances, args.instances)], run_id,
                      lambda b, tag: scratch_settings(b, work, dbname, args, tag), created_topics,
                      publish_all, run_consumer, throughput)
        target_ok = rate_fast >= 1500 and pct(latencies, 99) <= 2.0
        print(f"targets (>= 1,500 instances/s; p99 <= 2 s at 500/s): {'met' if target_ok else 'NOT met'}")
        return 0
    finally:
        for s in created_topics:
            try:
                delete_topics(s.kafka, s.topics.all())
            except Exception as exc:  # noqa: BLE001 - cleanup only
                print(f"could not delete topics: {exc}", file=sys.stderr)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
