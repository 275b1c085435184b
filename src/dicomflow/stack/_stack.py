"""The services together, in the order they depend on each other.

Kafka is one node or a cluster (``stack.kafka_brokers``, ``stack up --brokers N``),
plain or secured (``stack.secure``, ``stack up --secure``: SASL_SSL Kafka and
PostgreSQL with TLS).

ClickHouse is optional: started only when asked (``up(clickhouse=True)``, i.e.
``stack up --clickhouse``) or configured (``[stack] clickhouse = true``); it is
listed by ``status`` when configured or running, and ``down`` stops it if it runs.
The OHIF viewer's files (:mod:`._ohif`) are installed into the cache by ``up``
unless ``[web] viewer = false``. S3Proxy (the S3 server of ``storage.backend = "s3"``) is optional the same way:
``up(s3=True)`` / ``stack up --s3`` / ``[stack] s3 = true``; while it runs,
:attr:`LocalStack.settings` carries its endpoint and credentials.

What ``up`` started is remembered in the stack folder (:mod:`.state`): while
that state file exists, it decides the node count, ports and security of
``status``, ``down`` and a later ``up`` (an explicit ``brokers`` / ``secure``
still wins), so a three-node stack is seen as one whatever the settings say.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from dicomflow.settings import Settings, ohif_dist
from dicomflow.stack._clickhouse import ClickHouseServer
from dicomflow.stack._cluster import KafkaCluster, stop_every_node
from dicomflow.stack._postgres import PostgresServer
from dicomflow.stack._s3proxy import S3ProxyServer
from dicomflow.stack.state import NodeState, StackState, read_state, remove_state, write_state

log = logging.getLogger(__name__)


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
    ``stack.secure`` (the ``stack up --brokers N --secure`` options); when
    neither is given and the stack folder holds the state of a ``stack up``,
    that state decides.

    Raises:
        StackError: the stack folder's state file is unreadable (naming it).
    """

    def __init__(self, settings: Settings, *, brokers: int | None = None, secure: bool | None = None) -> None:
        self.s3proxy = S3ProxyServer(settings.stack, settings.storage.s3)
        #: The settings given, with ``storage.s3`` pointed at the stack's S3Proxy while it runs.
        self.settings = self.s3proxy.fill(settings)
        self.state = read_state(settings.stack.dir)
        stack = settings.stack
        if self.state is not None and brokers is None and secure is None:
            stack = self.state.applied_to(stack)
        self.secure = stack.secure if secure is None else secure
        self.kafka = KafkaCluster(stack, size=brokers, secure=self.secure)
        self.postgres = PostgresServer(settings.stack, settings.database)
        self.clickhouse = ClickHouseServer(settings.stack)

    def up(self, clickhouse: bool | None = None, s3: bool | None = None) -> list[ServiceStatus]:
        """Start what is not running; harmless when everything already runs. Then remember what runs.

        ``clickhouse`` None follows ``[stack] clickhouse``, ``s3`` None ``[stack] s3``; either also
        follows the state of the previous ``up``. A start that fails stops what this call started
        (what already ran is left running) before the error is raised.
        """
        if clickhouse is None:
            clickhouse = self.settings.stack.clickhouse or (self.state is not None and self.state.clickhouse)
        if s3 is None:
            s3 = self.settings.stack.s3 or (self.state is not None and self.state.s3)
        running = self._running()
        try:
            self._start_postgres()
            self.kafka.start()
            self._install_viewer()
            if clickhouse:
                self.clickhouse.start()
            if s3:
                self.s3proxy.start()
                self.settings = self.s3proxy.fill(self.settings)
        except BaseException:
            self._stop_started(running)
            raise
        self.state = StackState(
            tuple(NodeState(n.node_id, n.port, n.controller_port) for n in self.kafka.layout.nodes),
            secure=self.secure, clickhouse=clickhouse, s3=s3)
        write_state(self.settings.stack.dir, self.state)
        return self.status()

    def _running(self) -> set[str]:
        """The services running now, by name."""
        out = {name for name, pid in (("postgresql", self.postgres.pid()), ("clickhouse", self.clickhouse.pid()),
                                      ("s3proxy", self.s3proxy.pid())) if pid}
        if any(s.running for s in self.kafka.status()):
            out.add("kafka")
        return out

    def _stop_started(self, before: set[str]) -> None:
        """After a failed ``up``: stop each service that runs now and did not before, logging what fails."""
        stops = (("clickhouse", self.clickhouse.stop), ("s3proxy", self.s3proxy.stop),
                 ("kafka", self.kafka.stop), ("postgresql", self.postgres.stop))
        started = self._running() - before
        for name, stop in stops:
            if name not in started:
                continue
            log.warning("stack up failed: stopping %s, which it had started", name)
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - the first error is the one raised
                log.warning("could not stop %s: %s", name, exc)

    def _install_viewer(self) -> None:
        """OHIF's built files into the stack's cache (once), for ``dicomflow web``'s ``/viewer/``; skipped
        when ``[web] viewer = false`` or ``web.viewer.dist`` names a folder of its own."""
        viewer = self.settings.web.viewer
        if viewer.enabled and viewer.dist is None:
            from dicomflow.stack._ohif import install_ohif

            install_ohif(self.settings.stack.ohif_version, ohif_dist(self.settings).parent)

    def _start_postgres(self) -> None:
        """Start PostgreSQL; with ``self.secure`` with TLS (clients: ``self.postgres.client_settings()``)."""
        self.postgres.start(secure=self.secure)

    def down(self) -> None:
        """Stop ClickHouse (it consumes from Kafka), every Kafka node found in the stack folder
        (whatever layout started it), then PostgreSQL and S3Proxy; then forget the state of ``up``."""
        self.clickhouse.stop()
        self.kafka.stop()
        stop_every_node(self.settings.stack.dir)
        self.postgres.stop()
        self.s3proxy.stop()
        remove_state(self.settings.stack.dir)
        self.state = None

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
        s3 = self.s3proxy.status()
        if s3.running or self.settings.stack.s3:
            out.append(ServiceStatus("s3proxy", s3.running, s3.pid, s3.address, str(s3.log_file)))
        return out

    def _clickhouse_status(self) -> list[ServiceStatus]:
        c = self.clickhouse.status()
        remembered = self.state is not None and self.state.clickhouse
        if not (c.running or self.settings.stack.clickhouse or remembered):
            return []
        return [ServiceStatus("clickhouse", c.running, c.pid, c.address, str(c.log_file))]
