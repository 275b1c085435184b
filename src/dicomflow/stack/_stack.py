"""Both services together, in the order they depend on each other."""

from __future__ import annotations

from dataclasses import dataclass

from dicomflow.settings import Settings
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

    def up(self) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already runs."""
        self._start_postgres()
        self.kafka.start()
        return self.status()

    def _start_postgres(self) -> None:
        """Start PostgreSQL; with ``self.secure`` with TLS (clients: ``self.postgres.client_settings()``)."""
        self.postgres.start(secure=self.secure)

    def down(self) -> None:
        """Stop every Kafka node found in the stack folder (whatever layout started it), then PostgreSQL."""
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
        return out
