"""The warehouse sink's Prometheus metrics (``dicomflow_warehouse_*``), in a registry the caller owns.

Observers only: updating a metric never changes what the sink does.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Seconds, from a few milliseconds (a small batch) to half a minute (a large snapshot).
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
_SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000)


class WarehouseMetrics:
    """Counters, histograms and gauges of ``dicomflow warehouse run``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter(
            "dicomflow_warehouse_events_consumed", "Messages whose offsets the warehouse committed, by topic.",
            ["topic"], registry=registry,
        )
        self.rows = Counter(
            "dicomflow_warehouse_rows_written",
            "Rows inserted or updated per table (a replayed or older version writes none).",
            ["table"], registry=registry,
        )
        self.dead_lettered = Counter(
            "dicomflow_warehouse_dlq_messages", "Messages sent to <topic>.dlq, by source topic and error class.",
            ["topic", "error_class"], registry=registry,
        )
        self.retries = Counter(
            "dicomflow_warehouse_batch_retries", "Batch writes retried after a transient fault.", registry=registry,
        )
        self.batch_size = Histogram(
            "dicomflow_warehouse_batch_size", "Messages per batch.", buckets=_SIZE_BUCKETS, registry=registry,
        )
        self.batch_seconds = Histogram(
            "dicomflow_warehouse_batch_seconds",
            "From the first message of a batch consumed to its DuckDB transaction committed.",
            buckets=_TIME_BUCKETS, registry=registry,
        )
        self.write_seconds = Histogram(
            "dicomflow_warehouse_write_seconds", "Time of one batch's DuckDB transaction.",
            buckets=_TIME_BUCKETS, registry=registry,
        )
        self.snapshot_seconds = Histogram(
            "dicomflow_warehouse_snapshot_seconds", "Time to write one read-only snapshot file.",
            buckets=_TIME_BUCKETS, registry=registry,
        )
        self.snapshot_time = Gauge(
            "dicomflow_warehouse_snapshot_timestamp_seconds", "Unix time of the latest snapshot.", registry=registry,
        )
        self.lag = Gauge(
            "dicomflow_warehouse_lag", "Records between the sink's position and the end of the log, per partition.",
            ["topic", "partition"], registry=registry,
        )

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the per-partition lag gauges (partitions no longer owned disappear)."""
        self.lag.clear()
        for (topic, partition), value in lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(value)


__all__ = ["WarehouseMetrics"]
