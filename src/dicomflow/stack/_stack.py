"""The services together, in the order they depend on each other.

ClickHouse is optional: started only when asked (``up(clickhouse=True)``, i.e.
``stack up --clickhouse``) or configured (``[stack] clickhouse = true``); it is
listed by ``status`` when configured or running, and ``down`` stops it if it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicomflow.settings import Settings
from dicomflow.stack._clickhouse import ClickHouseServer
from dicomflow.stack._kafka import KafkaBroker
from dicomflow.stack._postgres import PostgresServer


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    running: bool
    pid: int | None
    address: str
    log_file: str


class LocalStack:
    """The local Kafka broker and PostgreSQL server described by the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.kafka = KafkaBroker(settings.stack)
        self.postgres = PostgresServer(settings.stack, settings.database)
        self.clickhouse = ClickHouseServer(settings.stack)

    def up(self, clickhouse: bool | None = None) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already runs.

        ``clickhouse`` None follows ``[stack] clickhouse``.
        """
        self.postgres.start()
        self.kafka.start()
        if self.settings.stack.clickhouse if clickhouse is None else clickhouse:
            self.clickhouse.start()
        return self.status()

    def down(self) -> None:
        """Stop the services by their PIDs (ClickHouse first: it consumes from Kafka)."""
        self.clickhouse.stop()
        self.kafka.stop()
        self.postgres.stop()

    def status(self) -> list[ServiceStatus]:
        k = self.kafka.status()
        p = self.postgres.status()
        return [
            ServiceStatus("kafka", k.running, k.pid, k.bootstrap, str(k.log_file)),
            ServiceStatus("postgresql", p.running, p.pid, p.address, str(p.log_file)),
            *self._clickhouse_status(),
        ]

    def _clickhouse_status(self) -> list[ServiceStatus]:
        c = self.clickhouse.status()
        if not (c.running or self.settings.stack.clickhouse):
            return []
        return [ServiceStatus("clickhouse", c.running, c.pid, c.address, str(c.log_file))]
