"""The local Kafka as a whole: one node or N, plain or SASL_SSL (see :mod:`._kafka` for the layout).

A cluster is started by launching every node that is not running first and
only then waiting: a KRaft node cannot serve anything until a majority of
the voters is up, so starting the nodes one after another and waiting for
each would wait forever on the first.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings
from dicomflow.stack._kafka import KafkaBroker, KafkaStatus
from dicomflow.stack._kafka_security import KafkaSecurity
from dicomflow.stack._layout import ClusterLayout, all_node_homes
from dicomflow.stack._proc import pid_alive, read_pid, stop_pid

log = logging.getLogger(__name__)


class KafkaCluster:
    """Every node of the local Kafka that the settings describe."""

    def __init__(self, settings: StackSettings, *, size: int | None = None, secure: bool | None = None) -> None:
        self.settings = settings
        self.layout = ClusterLayout.of(settings, size=size, secure=secure)
        self._security: KafkaSecurity | None = None
        self.nodes = [KafkaBroker(settings, spec, self.layout) for spec in self.layout.nodes]

    # ------------------------------------------------------------------ facts

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def secure(self) -> bool:
        return self.layout.secure

    @property
    def bootstrap(self) -> str:
        """``kafka.brokers`` for a client: every node's address."""
        return self.layout.bootstrap

    @property
    def home(self) -> Path:
        """The folder of the (first) node: ``<stack dir>/kafka`` for the default single node."""
        return self.nodes[0].home

    @property
    def data(self) -> Path:
        """The log directory of the (first) node."""
        return self.nodes[0].data

    @property
    def log_files(self) -> list[Path]:
        return [n.log_file for n in self.nodes]

    def node(self, node_id: int) -> KafkaBroker:
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise StackError(f"there is no Kafka node {node_id} (nodes 1..{self.size})")

    def security(self) -> KafkaSecurity | None:
        """Passwords and certificates of a secure stack (generated on first use); None when plain."""
        if not self.secure:
            return None
        if self._security is None:
            self._security = KafkaSecurity.ensure(self.settings.dir.resolve())
            for n in self.nodes:
                n.security = self._security
        return self._security

    def client_properties(self) -> dict[str, str]:
        """The ``[kafka.client]`` table of a dicomflow client of this stack (empty when plain)."""
        security = self.security()
        return security.client_properties() if security is not None else {}

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 120.0) -> list[int]:
        """Start every node that is not running; return the PIDs once the cluster serves requests.

        Raises:
            StackError: a node would not start (its log files named), or the
                cluster did not serve a produce and a consume in time.
        """
        security = self.security()
        if self.size == 1:
            pids = [self.nodes[0].launch()]
        else:  # formatting and JVM start-up of the nodes overlap
            from concurrent.futures import ThreadPoolExecutor

            # The nodes share one jar folder: resolve it once, before they start in parallel
            # (three Maven runs copying into one folder at once fail on a cold cache).
            self.nodes[0].install()
            with ThreadPoolExecutor(self.size) as pool:
                pids = list(pool.map(KafkaBroker.launch, self.nodes))
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            n.wait_listening(max(deadline - time.monotonic(), 1.0))
        for n in self.nodes:
            try:
                n.wait_ready(max(deadline - time.monotonic(), 1.0), bootstrap=self.bootstrap)
            except StackError as exc:
                logs = ", ".join(str(x.log_file) for x in self.nodes)
                raise StackError(f"{exc}; see {logs}") from exc
        if security is not None:
            security.write_client_settings(self.bootstrap)
        return pids

    def start_node(self, node_id: int, timeout_s: float = 120.0) -> int:
        """Start one node (after a kill) and wait until it is back in the cluster's metadata.

        Raises:
            StackError: it did not come back within ``timeout_s``.
        """
        self.security()
        node = self.node(node_id)
        pid = node.launch()
        node.wait_listening(timeout_s)
        node.wait_ready(timeout_s, bootstrap=self.bootstrap)
        return pid

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Return once the cluster serves a produce and a consume through any node."""
        self.security()
        self.nodes[0].wait_ready(timeout_s, bootstrap=self.bootstrap)

    def stop(self) -> None:
        """Stop every node (controlled shutdown, all at once, then SIGKILL after 30 s)."""
        pids = [(n, read_pid(n.pid_file)) for n in self.nodes]
        _stop_all([p for _, p in pids if p and pid_alive(p)])
        for n, _ in pids:
            n.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL every node (fault injection, or throwing a private stack away)."""
        for n in self.nodes:
            n.kill()

    def status(self) -> list[KafkaStatus]:
        return [n.status() for n in self.nodes]


def _stop_all(pids: list[int], timeout_s: float = 30.0) -> None:
    """SIGTERM all at once (a node shutting down alone may wait on a quorum the others take away)."""
    import os
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.2)
    for pid in pids:
        stop_pid(pid, 1.0)  # SIGKILL what is still there


def stop_every_node(stack_dir: Path) -> list[Path]:
    """Stop the Kafka nodes of every layout found under ``stack_dir`` (``stack down`` stops all); their folders."""
    homes = [h for h in all_node_homes(stack_dir) if pid_alive(read_pid(h / "kafka.pid"))]
    pids = [p for h in homes if (p := read_pid(h / "kafka.pid")) is not None]
    # Only our own JVMs: a pid file's PID counts when that process runs the Kafka main class.
    ours = []
    for pid in pids:
        try:
            if b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes():
                ours.append(pid)
        except OSError:
            continue
    _stop_all(ours)
    for h in homes:
        (h / "kafka.pid").unlink(missing_ok=True)
    return homes


__all__ = ["KafkaCluster", "stop_every_node"]
