"""The receiver's Prometheus metrics (``dicomflow_receiver_*``), over every ``--processes`` worker.

Aggregation across processes: prometheus-client's multiprocess mode. With
``receiver.processes > 1`` the dispatcher creates a temporary folder and
starts each worker with ``PROMETHEUS_MULTIPROC_DIR`` pointing at it (the
only way prometheus-client's value files are chosen; the dispatcher, not
library code, sets it). Workers write their samples there; the dispatcher's
``/metrics`` reads them all with a
:class:`~prometheus_client.multiprocess.MultiProcessCollector` and marks a
dead worker's live gauges gone. A single-process receiver uses a plain
registry. The same :class:`ReceiverMetrics` serves both: the metric objects
do not know which mode they are in.

Metrics are observers: updating one never changes what the receiver does.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dicomflow.metrics.health import Probe

#: Seconds, from a tenth of a millisecond (a small write) to a minute (a Kafka outage).
_TIME_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                 60.0)


class ReceiverMetrics:
    """Counters and histograms of ``dicomflow scp``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.open = Gauge(
            "dicomflow_receiver_associations_open", "Associations being served now.", registry=registry,
            multiprocess_mode="livesum",
        )
        self.accepted = Counter(
            "dicomflow_receiver_associations_accepted", "Associations accepted (A-ASSOCIATE-AC sent).",
            registry=registry,
        )
        self.rejected = Counter(
            "dicomflow_receiver_associations_rejected",
            "Associations refused (A-ASSOCIATE-RJ) or aborted, by reason.", ["reason"], registry=registry,
        )
        self.stored_instances = Counter(
            "dicomflow_receiver_instances_stored", "Instances stored and acknowledged by Kafka (Success answered).",
            registry=registry,
        )
        self.refused_instances = Counter(
            "dicomflow_receiver_instances_refused", "C-STOREs answered with a failure status, by status.",
            ["status"], registry=registry,
        )
        self.bytes = Counter(
            "dicomflow_receiver_bytes", "Bytes of the files stored (preamble and meta included).", registry=registry,
        )
        self.write_seconds = Histogram(
            "dicomflow_receiver_store_write_seconds", "Writing one instance's bytes to its temporary file.",
            buckets=_TIME_BUCKETS, registry=registry,
        )
        self.fsync_seconds = Histogram(
            "dicomflow_receiver_store_fsync_seconds", "fdatasync and rename of one instance's file.",
            buckets=_TIME_BUCKETS, registry=registry,
        )
        self.ack_seconds = Histogram(
            "dicomflow_receiver_store_ack_seconds",
            "Kafka acknowledging one instance's store event and receipt (the folder fsync overlaps it).",
            buckets=_TIME_BUCKETS, registry=registry,
        )

    def stored(self, size: int, *, write_s: float, fsync_s: float, ack_s: float) -> None:
        self.stored_instances.inc()
        self.bytes.inc(size)
        self.write_seconds.observe(write_s)
        self.fsync_seconds.observe(fsync_s)
        self.ack_seconds.observe(ack_s)

    def refused(self, status: int) -> None:
        self.refused_instances.labels(status=f"0x{status:04X}").inc()

    def rejected_for(self, reason: str) -> None:
        self.rejected.labels(reason=reason).inc()


def storage_probe(root: Path) -> Probe:
    """Healthy when a file can be created, written, synced and removed under the storage root."""

    def probe() -> str | None:
        path = root / f".healthz-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(path)
        except OSError as exc:
            return f"not writable: {exc.strerror or exc}"
        return None

    return probe


__all__ = ["ReceiverMetrics", "storage_probe"]
