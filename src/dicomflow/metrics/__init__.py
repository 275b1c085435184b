"""Prometheus metrics and the health endpoint.

Every component registers its metrics in a
:class:`~prometheus_client.CollectorRegistry` passed in by the caller (never
the global default registry), and :class:`MetricsServer` exposes that
registry on ``/metrics`` with the component's :class:`Health` on ``/healthz``.
"""

from dicomflow.metrics.consumer import ConsumerMetrics
from dicomflow.metrics.health import Health, HealthReport, postgres_probe
from dicomflow.metrics.server import MetricsServer
from dicomflow.metrics.warehouse import WarehouseMetrics
from dicomflow.metrics.web import WebMetrics

__all__ = ["ConsumerMetrics", "Health", "HealthReport", "MetricsServer", "WarehouseMetrics", "WebMetrics", "postgres_probe"]
