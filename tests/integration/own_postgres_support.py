"""A PostgreSQL server of one test only, to SIGKILL and restart (the shared stack's is never touched)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.errors import StackError
from dicomflow.settings import DatabaseSettings, StackSettings
from dicomflow.stack import PostgresServer, free_port


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    """A cluster in the test's folder on a free port; stopped and removed afterwards."""
    port = free_port()
    server = PostgresServer(StackSettings(dir=tmp_path / "stack", postgres_port=port), DatabaseSettings(port=port))
    server.start()
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.home, ignore_errors=True)
        if server.home.parent.name.startswith("dicomflow-"):  # the stack's fallback home outside tmp_path
            try:
                server.home.parent.rmdir()
            except OSError:
                pass


def restart(server: PostgresServer, timeout_s: float = 120.0) -> None:
    """Start PostgreSQL again after a SIGKILL (crash recovery); its port may take a moment to be free."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            server.start()
            return
        except StackError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
