"""Prometheus metrics of ``dicomflow images`` (``dicomflow_images_*``), in a registry the caller owns."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_TIME_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ImagesMetrics:
    """Events handled, outputs built, dead letters, batch latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.consumed = Counter("dicomflow_images_events_consumed", "Instance events read from dicom_image_queue.",
                                registry=registry)
        self.skipped = Counter("dicomflow_images_events_skipped",
                               "Events needing no work, by why (own-republish, done, no-pixels).", ["why"],
                               registry=registry)
        self.outputs = Counter("dicomflow_images_outputs", "Files written, by kind (thumbnail, transcoded).",
                               ["kind"], registry=registry)
        self.failed = Counter("dicomflow_images_failures", "Instances that could not be processed, by error class.",
                              ["error_class"], registry=registry)
        self.dead_lettered = Counter("dicomflow_images_dlq_messages",
                                     "Messages acknowledged by dicom_image_queue.dlq.", registry=registry)
        self.republished = Counter("dicomflow_images_events_published",
                                   "Updated instance events acknowledged on dicom_image_queue.", registry=registry)
        self.retries = Counter("dicomflow_images_batch_retries", "Batches retried after a transient fault.",
                               registry=registry)
        self.batch_seconds = Histogram("dicomflow_images_batch_seconds", "Time to process and commit one batch.",
                                       buckets=_TIME_BUCKETS, registry=registry)


__all__ = ["ImagesMetrics"]
