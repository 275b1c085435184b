"""Both services together, in the order they depend on each other."""

from __future__ import annotations

from dataclasses import dataclass

from dicomflow.settings import Settings
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

    def up(self) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already runs."""
        self.postgres.start()
        self.kafka.start()
        return self.status()

    def down(self) -> None:
        """Stop both services by their PIDs."""
        self.kafka.stop()
        self.postgres.stop()

    def status(self) -> list[ServiceStatus]:
        k = self.kafka.status()
        p = self.postgres.status()
        return [
            ServiceStatus("kafka", k.running, k.pid, k.bootstrap, str(k.log_file)),
            ServiceStatus("postgresql", p.running, p.pid, p.address, str(p.log_file)),
        ]
