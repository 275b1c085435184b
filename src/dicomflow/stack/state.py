"""What ``dicomflow stack up`` started, remembered in the stack folder (``<stack dir>/stack.json``).

``up`` writes it atomically once the services serve; ``down`` removes it once
they are stopped. While it exists, the stack follows it rather than the
settings: ``stack status`` and ``stack down`` see the three nodes that
``stack up --brokers 3`` started without being given ``--brokers 3`` again,
and every command that was not told ``kafka.brokers`` bootstraps from every
node (``StackState.bootstrap``), so a client started while node 1 is down
still reaches the cluster.

The file is JSON with stable keys::

    {"version": 1, "kafka": {"nodes": [{"node_id": 1, "port": 19092, "controller_port": 19093}, ...],
                             "secure": false, "bootstrap": "127.0.0.1:19092,..."},
     "clickhouse": false, "s3": false, "started_at": "2026-01-31T08:00:00+00:00"}

A plain ``stack up`` after ``stack up --s3`` (or ``--clickhouse``) starts the
same services again: what ran is remembered, not only the settings.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dicomflow.errors import StackError
from dicomflow.settings import StackSettings

#: The state file's name inside the stack folder.
STATE_FILE = "stack.json"
_VERSION = 1


@dataclass(frozen=True)
class NodeState:
    """One Kafka node as it was started: its id and its two ports (on 127.0.0.1)."""

    node_id: int
    port: int
    controller_port: int


@dataclass(frozen=True)
class StackState:
    """The services one ``stack up`` started (see the module docstring)."""

    nodes: tuple[NodeState, ...]
    secure: bool = False
    clickhouse: bool = False
    s3: bool = False
    started_at: str = ""

    @property
    def brokers(self) -> int:
        """The number of Kafka nodes."""
        return len(self.nodes)

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated: the ``kafka.brokers`` of a client of this stack."""
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def applied_to(self, settings: StackSettings) -> StackSettings:
        """``settings`` describing this stack: its node count, ports and security (the folder stays)."""
        return dataclasses.replace(
            settings, kafka_brokers=self.brokers, secure=self.secure,
            kafka_port=self.nodes[0].port, kafka_controller_port=self.nodes[0].controller_port,
            kafka_ports=tuple(n.port for n in self.nodes),
            kafka_controller_ports=tuple(n.controller_port for n in self.nodes),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "version": _VERSION,
            "kafka": {"nodes": [dataclasses.asdict(n) for n in self.nodes], "secure": self.secure,
                      "bootstrap": self.bootstrap},
            "clickhouse": self.clickhouse,
            "s3": self.s3,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, data: object, source: Path) -> StackState:
        """Parse the file's content.

        Raises:
            StackError: not a state file of this version, naming ``source``.
        """
        bad = StackError(f"{source} is not a dicomflow stack state file (version {_VERSION}); "
                         "remove it if no stack runs there")
        if not isinstance(data, dict) or data.get("version") != _VERSION or not isinstance(data.get("kafka"), dict):
            raise bad
        kafka = data["kafka"]
        try:
            nodes = tuple(NodeState(int(n["node_id"]), int(n["port"]), int(n["controller_port"]))
                          for n in kafka["nodes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise bad from exc
        if not nodes:
            raise bad
        return cls(nodes, secure=bool(kafka.get("secure", False)), clickhouse=bool(data.get("clickhouse", False)),
                   s3=bool(data.get("s3", False)), started_at=str(data.get("started_at", "")))


def state_path(stack_dir: Path) -> Path:
    return stack_dir.resolve() / STATE_FILE


def read_state(stack_dir: Path) -> StackState | None:
    """The state of the stack in ``stack_dir``; None when no ``stack up`` left one.

    Raises:
        StackError: the file exists but cannot be read or parsed (naming it).
    """
    path = state_path(stack_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StackError(f"cannot read the stack state {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise StackError(f"{path} is not JSON ({exc}); remove it if no stack runs there") from exc
    return StackState.from_json(data, path)


def write_state(stack_dir: Path, state: StackState) -> Path:
    """Write ``state`` atomically: a reader sees the old file or the new one, never a part.

    The content goes to a temporary file in the same folder, is fsynced, and
    is renamed over the state file; the folder is fsynced too.
    """
    path = state_path(stack_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not state.started_at:
        state = dataclasses.replace(state, started_at=datetime.now(UTC).isoformat(timespec="seconds"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state.to_json(), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def remove_state(stack_dir: Path) -> None:
    """Forget the stack (after ``down`` stopped it); nothing happens when there is no state file."""
    state_path(stack_dir).unlink(missing_ok=True)


__all__ = ["STATE_FILE", "NodeState", "StackState", "read_state", "remove_state", "state_path", "write_state"]
