"""Fixtures for the ClickHouse tests: the real local ClickHouse server, a database per test.

The server is the local stack's (``dicomflow stack up --clickhouse`` starts the
same one), started here when it does not run. Each test gets its own database
and consumer groups; dropping the database drops its Kafka-engine tables, which
ends their consumers.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from dicomflow.settings import Settings
from dicomflow.stack import ClickHouseServer, LocalStack
from dicomflow.warehouse.clickhouse_http import ClickHouseHTTP


@pytest.fixture(scope="session")
def clickhouse_server(stack: LocalStack) -> ClickHouseServer:
    """The local ClickHouse server, started if needed (left running like the rest of the stack)."""
    server = ClickHouseServer(stack.settings.stack)
    server.start()
    return server


@pytest.fixture
def clickhouse(clickhouse_server: ClickHouseServer, pipeline: Settings) -> Iterator[tuple[Settings, ClickHouseHTTP]]:
    """Pipeline settings with a fresh ClickHouse database and consumer groups, and a client."""
    suffix = uuid.uuid4().hex[:10]
    ch = dataclasses.replace(pipeline.clickhouse, database=f"dicomflow_test_{suffix}", group_prefix=f"test_{suffix}",
                             url=clickhouse_server.url)
    client = ClickHouseHTTP(clickhouse_server.url)
    yield dataclasses.replace(pipeline, clickhouse=ch), client
    try:
        client.execute(f"DROP DATABASE IF EXISTS {ch.database}")
    except Exception:  # noqa: BLE001 - cleanup is best effort
        pass


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
