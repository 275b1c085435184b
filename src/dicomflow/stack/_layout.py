"""Where the nodes of the local Kafka live and listen.

Each node has its own folder (data, ``server.properties``, ``server.log``,
pid file) and its own two ports (client listener and controller listener):

- one node (the default): ``<stack dir>/kafka``, ports ``stack.kafka_port``
  and ``stack.kafka_controller_port``, exactly as before clusters existed;
- N nodes (``stack.kafka_brokers`` / ``stack up --brokers N``):
  ``<stack dir>/kafka-cluster-N/node-<id>``, node ids 1..N, ports from
  ``stack.kafka_ports`` / ``stack.kafka_controller_ports`` when given, else
  ``kafka_port + 2 (id - 1)`` and ``kafka_controller_port + 2 (id - 1)``;
- ``--secure`` stacks live in folders of their own (``-secure`` suffix):
  their storage is formatted with the SCRAM users (:mod:`._kafka_security`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings


@dataclass(frozen=True)
class NodeSpec:
    """Where one node lives and listens."""

    node_id: int
    port: int
    controller_port: int
    home: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class ClusterLayout:
    """The nodes a :class:`~dicomflow.settings.StackSettings` describes (see the module docstring)."""

    size: int
    secure: bool
    root: Path
    nodes: tuple[NodeSpec, ...] = field(default=())

    @classmethod
    def of(cls, settings: StackSettings, *, size: int | None = None, secure: bool | None = None) -> ClusterLayout:
        """The layout for ``size`` nodes (default ``settings.kafka_brokers``), plain or secure.

        Raises:
            StackError: explicit port lists shorter than the node count.
        """
        n = settings.kafka_brokers if size is None else size
        sec = settings.secure if secure is None else secure
        if n < 1:
            raise StackError(f"a Kafka stack needs at least one node, not {n}")
        base = settings.dir.resolve()
        suffix = "-secure" if sec else ""
        root = base / f"kafka{suffix}" if n == 1 else base / f"kafka-cluster-{n}{suffix}"
        ports = _node_ports(settings.kafka_ports, settings.kafka_port, n, "stack.kafka_ports")
        cports = _node_ports(settings.kafka_controller_ports, settings.kafka_controller_port, n,
                             "stack.kafka_controller_ports")
        nodes = tuple(
            NodeSpec(i + 1, ports[i], cports[i], root if n == 1 else root / f"node-{i + 1}") for i in range(n)
        )
        return cls(n, sec, root, nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (``kafka.brokers`` of a client)."""
        return ",".join(n.address for n in self.nodes)

    @property
    def voters(self) -> str:
        return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    def replicas(self, wanted: int) -> int:
        """A replication factor for the cluster's internal topics: ``wanted``, at most the node count."""
        return min(wanted, self.size)


def _node_ports(explicit: tuple[int, ...], first: int, n: int, key: str) -> list[int]:
    if explicit:
        if len(explicit) < n:
            raise StackError(f"{key} lists {len(explicit)} port(s) for {n} Kafka node(s)")
        return list(explicit[:n])
    return [first + 2 * i for i in range(n)]


def all_node_homes(stack_dir: Path) -> Iterator[Path]:
    """Every Kafka node folder under a stack directory, whatever layout made it (for ``stack down``)."""
    base = stack_dir.resolve()
    for pid_file in sorted(base.glob("kafka*/kafka.pid")) + sorted(base.glob("kafka-cluster-*/node-*/kafka.pid")):
        yield pid_file.parent
