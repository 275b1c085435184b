"""The consumer service: builds the real collaborators of the loop from the settings and owns them.

Kept apart from the loop so that the loop's logic depends only on small
interfaces (a store, a publisher, a consumer factory) while the command, the
benchmarks and the integration tests get a ready, correctly closed service
with one call.

One producer, one PostgreSQL connection and one process pool per process,
created once and reused for every batch (the Rust reference consumer created
a new producer and a new database connection per batch: docs/architecture.md,
"What the Rust reference services got wrong", 4).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.group import RebalanceListener
from dicomflow.metrics import ConsumerMetrics, Health, MetricsServer, postgres_probe
from dicomflow.pipeline.loop import ConsumerLoop, LoopConfig
from dicomflow.pipeline.parse import Parser
from dicomflow.pipeline.stats import CommittedBatch, RunSummary
from dicomflow.settings import Settings

log = logging.getLogger(__name__)


class ConsumerService:
    """``dicomflow consume`` as an object: run it, stop it from a signal handler or another thread.

    Raises (from :meth:`run`):
        ConsumerError: a fatal Kafka client error.
        ConfigError: the Kafka client refused its configuration.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_messages: int | None = None,
        until_idle_s: float | None = None,
        registry: CollectorRegistry | None = None,
        on_commit: Callable[[CommittedBatch], None] | None = None,
        keep_batch_log: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: the event that ends :meth:`run` (the CLI's signal handlers set it)."""
        from dicomflow.kafka.producer import Publisher
        from dicomflow.store import PgStore

        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = ConsumerMetrics(self.registry)
        self.health = Health()
        self.health.add_probe("postgresql", postgres_probe(settings.database))
        self.parser = Parser(settings.storage, settings.consumer.parse_workers)
        self.store = PgStore(settings.database)
        self.publisher = Publisher(settings.kafka, settings.topics)
        self.loop = ConsumerLoop(
            LoopConfig.from_settings(settings, max_messages=max_messages, until_idle_s=until_idle_s),
            self._make_consumer,
            self.parser,
            self.store,
            self.publisher,
            metrics=self.metrics,
            health=self.health,
            on_commit=on_commit,
            keep_batch_log=keep_batch_log,
            stop=stop,
        )
        self.server: MetricsServer | None = None

    def _make_consumer(self, listener: RebalanceListener) -> KafkaConsumer:
        s = self.settings
        return KafkaConsumer(
            s.kafka,
            group_id=s.topics.consumer_group_id,
            session_timeout_ms=s.consumer.session_timeout_ms,
            max_poll_interval_ms=s.consumer.max_poll_interval_ms,
            listener=listener,
            client_id=f"dicomflow-consumer-{s.worker_node_id}",
        )

    def stop(self) -> None:
        """Finish the batch in hand, commit, and return from :meth:`run` (signal-handler safe)."""
        self.loop.stop()

    def run(self) -> RunSummary:
        """Start the parse workers and the metrics endpoint, run the loop, then close everything."""
        try:
            m = self.settings.metrics
            if m.port:
                self.server = MetricsServer(m.host, m.port, self.registry, self.health).start()
            self.parser.start()
            return self.loop.run()
        finally:
            self.close()

    def close(self) -> None:
        """Release the pool, the producer (after delivering what it holds), the connection and the server."""
        self.parser.close()
        try:
            self.publisher.close()
        finally:
            self.store.close()
            if self.server is not None:
                self.server.stop()
                self.server = None


__all__ = ["ConsumerService"]
