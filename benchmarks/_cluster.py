"""A private N-broker Kafka cluster for the ``--brokers N`` mode of the benchmarks.

Started in a temporary folder on free ports (the shared stack is never
touched), from the jars of the local stack's cache; topics created on it get
replication factor 3 and min.insync.replicas 2 (what ``topics create``
derives on three brokers), and every producer writes with acks=all, as always.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicomflow.settings import Settings, StackSettings
from dicomflow.stack import KafkaCluster, free_ports


@contextmanager
def private_cluster(base: Settings, nodes: int = 3) -> Iterator[Settings]:
    """``base`` with ``kafka.brokers`` pointing at a fresh ``nodes``-broker cluster; removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix="dicomflow-bench-cluster-"))
    cache = base.stack.dir.resolve() / "cache"
    if cache.is_dir():
        (home / "cache").symlink_to(cache, target_is_directory=True)
    ports = free_ports(2 * nodes)
    stack = StackSettings(dir=home, kafka_port=ports[0], kafka_controller_port=ports[nodes], kafka_brokers=nodes,
                          kafka_ports=tuple(ports[:nodes]), kafka_controller_ports=tuple(ports[nodes:]),
                          kafka_heap_mb=base.stack.kafka_heap_mb, kafka_version=base.stack.kafka_version)
    cluster = KafkaCluster(stack)
    try:
        t0 = time.perf_counter()
        try:
            cluster.start(timeout_s=300)
        except Exception:
            for node in cluster.nodes:  # the folder goes away below: show why a node did not start
                for name in ("stdout.log", "server.log"):
                    log = node.home / name
                    if log.exists():
                        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                        print(f"--- node {node.node_id} {name}:\n{tail}", file=sys.stderr)
            raise
        print(f"private {nodes}-broker cluster up in {time.perf_counter() - t0:.1f} s at {cluster.bootstrap} "
              f"(topics: replication 3, min ISR 2; producers acks=all)", flush=True)
        yield dataclasses.replace(base, kafka=dataclasses.replace(base.kafka, brokers=cluster.bootstrap))
    finally:
        cluster.kill()
        shutil.rmtree(home, ignore_errors=True)
