"""bench_consumer's storage-backend rows: the throughput phase on S3 (S3Proxy) against the filesystem, alternated.

The first ``n`` files of the corpus are put into the stack's S3Proxy under a
key prefix of the run (the same keys as under the scratch root); each round
publishes their store events on fresh topics, once naming the files and once
naming the objects (``s3://bucket/prefix/key``), and drains them with the
same consumer settings: filesystem, s3, filesystem, s3, ... Medians compared;
the target (issue 18) is >= 1,500 instances/s end to end on S3.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec

from dicomflow.blobs import BlobStore, open_store
from dicomflow.kafka.admin import create_topics
from dicomflow.models import DicomStoreMeta
from dicomflow.pipeline.service import ConsumerService
from dicomflow.pipeline.stats import CommittedBatch
from dicomflow.settings import Settings
from dicomflow.stack import LocalStack

ROUNDS = 3


def upload(store: BlobStore, root: Path, events: list[DicomStoreMeta]) -> list[DicomStoreMeta]:
    """Put each event's file into ``store`` under its key; the events naming the objects."""
    def one(event: DicomStoreMeta) -> DicomStoreMeta:
        key = Path(event.file_path).relative_to(root).as_posix()
        store.put_file(key, Path(event.file_path))
        return msgspec.structs.replace(event, file_path=store.location(key))

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, events))


def s3_rounds(base: Settings, work: Path, args: argparse.Namespace, events: list[DicomStoreMeta], run_id: str,
              scratch: Callable[[Settings, str], Settings], created: list[Settings],
              publish_all: Callable[[Settings, list[DicomStoreMeta]], None],
              run_consumer: Callable[[Settings, int], tuple[list[CommittedBatch], ConsumerService]],
              throughput: Callable[[list[CommittedBatch], ConsumerService], tuple[int, float]]) -> None:
    """Print the filesystem and s3 rates of ``ROUNDS`` alternated rounds over ``events`` and their ratio."""
    stack = LocalStack(base)
    stack.up(s3=True)
    filled = LocalStack(base).settings.storage
    s3 = dataclasses.replace(filled.s3, prefix=f"bench-consumer-{run_id}/")
    storage = dataclasses.replace(base.storage, root=work, backend="s3", s3=s3)
    store = open_store(storage)
    on_s3 = upload(store, work, events)
    size_kb = sum(e.file_size for e in events) / len(events) / 1000
    print(f"s3 rows: {len(events)} objects ({size_kb:.1f} kB each) in s3://{s3.bucket}/{s3.prefix} "
          f"({s3.endpoint}); {ROUNDS} rounds, filesystem and s3 alternated")
    rates: dict[str, list[float]] = {"filesystem": [], "s3": []}
    try:
        for r in range(ROUNDS):
            for backend, batch in (("filesystem", events), ("s3", on_s3)):
                phase = scratch(base, f"{run_id}_{backend[:2]}{r}")
                if backend == "s3":
                    phase = dataclasses.replace(phase, storage=storage)
                create_topics(phase.kafka, phase.topics)
                created.append(phase)
                publish_all(phase, batch)
                batches, service = run_consumer(phase, len(batch))
                n, elapsed = throughput(batches, service)
                rates[backend].append(n / elapsed)
                print(f"  round {r + 1}, {backend:<10}: {n} instances in {elapsed:.2f} s = {n / elapsed:,.0f}/s")
    finally:
        for info in list(store.list()):
            store.delete(info.key)
    fs, on = statistics.median(rates["filesystem"]), statistics.median(rates["s3"])
    print(f"throughput on s3: median {on:,.0f} instances/s against {fs:,.0f}/s on the filesystem "
          f"({on / fs:.2f}x); target on s3 >= 1,500/s: {'met' if on >= 1500 else 'NOT met'}")
