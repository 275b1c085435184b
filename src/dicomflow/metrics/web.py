"""Prometheus metrics of ``dicomflow web`` (``dicomflow_web_*``), in a registry the caller owns.

``route`` is the route template (``/studies/{study}/series``), never the
concrete path, so UIDs do not explode the label set; requests that match no
route are counted as ``route="unmatched"``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

#: Seconds, from a cached QIDO answer to a large series streamed.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WebMetrics:
    """Requests by route and status, latency by route, bytes sent, metadata cache use."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "dicomflow_web_requests", "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"], registry=registry,
        )
        self.latency = Histogram(
            "dicomflow_web_request_seconds", "Time from request to the end of the response body, by route template.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.instances_sent = Counter(
            "dicomflow_web_instances_sent", "Instances sent by WADO-RS, by whether they were transcoded.",
            ["transcoded"], registry=registry,
        )
        self.metadata_cache = Counter(
            "dicomflow_web_metadata_cache", "Instance metadata documents served, by cache outcome (hit, built).",
            ["outcome"], registry=registry,
        )
        self.audit_failures = Counter(
            "dicomflow_web_audit_failures", "Audit events Kafka did not acknowledge.", registry=registry,
        )


__all__ = ["WebMetrics"]
