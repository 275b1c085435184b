"""Private Kafka stacks for the cluster and security tests: own folder, free ports, the shared jar cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dicomflow.settings import Settings, StackSettings
from dicomflow.stack import free_ports


def private_stack_settings(home: Path, shared: Settings, nodes: int) -> StackSettings:
    """Stack settings for ``nodes`` Kafka nodes in ``home``, on free ports, sharing the jar cache."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(shared.stack.dir.resolve() / "cache", target_is_directory=True)
    ports = free_ports(2 * nodes)
    return StackSettings(dir=home, kafka_port=ports[0], kafka_controller_port=ports[nodes], kafka_heap_mb=320,
                         kafka_brokers=nodes, kafka_ports=tuple(ports[:nodes]),
                         kafka_controller_ports=tuple(ports[nodes:]))


def dicomflow_cli(*args: str, env: dict[str, str], timeout_s: float = 120.0,
                  cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dicomflow.cli ARGS`` with exactly ``env``'s DICOMFLOW_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", *args], env={**clean, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s, check=False)
