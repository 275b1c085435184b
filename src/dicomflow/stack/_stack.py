"""The services together, in the order they depend on each other.

Kafka is one node or a cluster (``stack.kafka_brokers``, ``stack up --brokers N``),
plain or secured (``stack.secure``, ``stack up --secure``: SASL_SSL Kafka and
PostgreSQL with TLS).

ClickHouse is optional: started only when asked (``up(clickhouse=True)``, i.e.
``stack up --clickhouse``) or configured (``[stack] clickhouse = true``); it is
listed by ``status`` when configured or running, and ``down`` stops it if it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomflow.settings import Settings
from dicomflow.stack._clickhouse import ClickHouseServer
from dicomflow.stack._cluster import KafkaCluster, stop_every_node
from dicomflow.stack._postgres import PostgresServer


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log_file: str


class LocalStack:
    """The local Kafka (one node or a cluster) and PostgreSQL server described by the settings.

    ``brokers`` and ``secure`` override ``stack.kafka_brokers`` and
    ``stack.secure`` (the ``stack up --brokers N --secure`` options).
    """

    def __init__(self, settings: Settings, *, brokers: int | None = None, secure: bool | None = None) -> None:
        self.settings = settings
        self.secure = settings.stack.secure if secure is None else secure
        self.kafka = KafkaCluster(settings.stack, size=brokers, secure=self.secure)
        self.postgres = PostgresServer(settings.stack, settings.database)
        self.clickhouse = ClickHouseServer(settings.stack)

    def up(self, clickhouse: bool | None = None) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already runs.

        ``clickhouse`` None follows ``[stack] clickhouse``.
        """
        self._start_postgres()
        self.kafka.start()
        if self.settings.stack.clickhouse if clickhouse is None else clickhouse:
            self.clickhouse.start()
        return self.status()

    def _start_postgres(self) -> None:
        """Start PostgreSQL; with ``self.secure`` with TLS (clients: ``self.postgres.client_settings()``)."""
        self.postgres.start(secure=self.secure)

    def down(self) -> None:
        """Stop ClickHouse (it consumes from Kafka), every Kafka node found in the stack folder
        (whatever layout started it), then PostgreSQL."""
        self.clickhouse.stop()
        self.kafka.stop()
        stop_every_node(self.settings.stack.dir)
        self.postgres.stop()

    def status(self) -> list[ServiceStatus]:
        nodes = self.kafka.status()
        out = [
            ServiceStatus("kafka" if len(nodes) == 1 else f"kafka-{k.node_id}", k.running, k.pid, k.bootstrap,
                          str(k.log_file))
            for k in nodes
        ]
        p = self.postgres.status()
        out.append(ServiceStatus("postgresql", p.running, p.pid, p.address, str(p.log_file)))
        out.extend(self._clickhouse_status())
        return out

    def _clickhouse_status(self) -> list[ServiceStatus]:
        c = self.clickhouse.status()
        if not (c.running or self.settings.stack.clickhouse):
            return []
        return [ServiceStatus("clickhouse", c.running, c.pid, c.address, str(c.log_file))]
