"""The consumer's Prometheus metrics, registered in a registry the caller owns.

Why an explicit registry: tests and several components in one process must
not collide in prometheus-client's global default registry. The CLI creates
one :class:`~prometheus_client.CollectorRegistry`, every component registers
its metrics there, and the HTTP server exposes that registry.

Metrics are observers: updating one never changes what the pipeline does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Batch sizes from single events to ten times the default batch.
_SIZE_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
#: Seconds, from a few milliseconds to a minute (a PostgreSQL restart).
_TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


class ConsumerMetrics:
    """Counters, histograms and gauges of ``dicomflow consume``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # A flat mapping, one metric definition per attribute: longer than a function should be, on
        # purpose (allowlisted in tests/unit/test_sizes.py).
        self.registry = registry
        self.consumed = Counter(
            "dicomflow_consumer_events_consumed", "Store events read from the storage topic.", registry=registry
        )
        self.persisted = Counter(
            "dicomflow_consumer_instances_persisted",
            "Instances committed to PostgreSQL and acknowledged as events (offsets committed).",
            registry=registry,
        )
        self.failed = Counter(
            "dicomflow_consumer_events_failed",
            "Store events that can never be processed (poison), by error class.",
            ["error_class"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "dicomflow_consumer_dlq_messages", "Messages acknowledged by the dead-letter topic.", registry=registry
        )
        self.published = Counter(
            "dicomflow_consumer_events_published",
            "Derived events acknowledged by Kafka, by kind (state, image, audit).",
            ["kind"],
            registry=registry,
        )
        self.retries = Counter(
            "dicomflow_consumer_batch_retries",
            "Batch attempts that hit a transient fault and were retried, by fault.",
            ["fault"],
            registry=registry,
        )
        self.batches = Counter(
            "dicomflow_consumer_batches", "Batches whose offsets were committed.", registry=registry
        )
        self.batch_size = Histogram(
            "dicomflow_consumer_batch_size", "Store events per batch.", buckets=_SIZE_BUCKETS, registry=registry
        )
        self.batch_seconds = Histogram(
            "dicomflow_consumer_batch_seconds",
            "From the batch window opening (its first event produced, at most batch_max_ms earlier) to its offsets committed.",
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.parse_seconds = Histogram(
            "dicomflow_consumer_parse_seconds", "Time to parse one batch's DICOM headers.", buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.store_seconds = Histogram(
            "dicomflow_consumer_store_seconds", "Time of one batch's PostgreSQL transaction.", buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.event_latency = Histogram(
            "dicomflow_consumer_event_latency_seconds",
            "From a store event's created_time to the PostgreSQL commit of its batch (clock of this host).",
            buckets=_TIME_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            "dicomflow_consumer_lag",
            "Records between the committed offset and the end of the log, per owned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.last_poll = Gauge(
            "dicomflow_consumer_last_poll_timestamp_seconds", "Unix time the loop last polled Kafka.",
            registry=registry,
        )

    def observe_latencies(self, created: Iterable[dt.datetime], at: dt.datetime) -> None:
        """One latency sample per instance, from its store event's creation to ``at``."""
        for c in created:
            self.event_latency.observe(max(0.0, (at - c).total_seconds()))

    def set_lag(self, lag: Mapping[tuple[str, int], int]) -> None:
        """Replace the per-partition lag gauges (partitions no longer owned disappear)."""
        self.lag.clear()
        for (topic, partition), value in lag.items():
            self.lag.labels(topic=topic, partition=str(partition)).set(value)


__all__ = ["ConsumerMetrics"]
