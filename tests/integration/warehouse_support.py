"""Helpers of the warehouse tests: real topics, a real DuckDB file, the sink in-process or as a subprocess."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.settings import Settings, to_child_env
from dicomflow.warehouse.schema import TABLES
from dicomflow.warehouse.sink import SinkSummary, WarehouseSink
from dicomflow.warehouse.synthetic import Traffic

WAREHOUSE_TABLES = tuple(t.name for t in TABLES)


@pytest.fixture
def wh(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """Test settings with the topics created, a fresh DuckDB file, its own group, small batches."""
    create_topics(settings.kafka, settings.topics)
    w = dataclasses.replace(
        settings.warehouse, path=tmp_path / "warehouse.duckdb", group_id=f"{settings.topics.consumer_group_id}_wh",
        batch_max_messages=2000, batch_max_ms=300, snapshot_interval_s=1.0, threads=1,
    )
    consumer = dataclasses.replace(settings.consumer, session_timeout_ms=6000)
    yield dataclasses.replace(settings, warehouse=w, consumer=consumer, worker_node_id="test-warehouse")
    try:
        t = settings.topics
        delete_topics(settings.kafka, t.all())  # the dead-letter topics included
    except Exception:  # noqa: BLE001 - best effort
        pass


def produce(settings: Settings, traffic: Traffic) -> None:
    """Publish every message of ``traffic`` to the test's topics, acknowledged."""
    with Publisher(settings.kafka, settings.topics) as p:
        for attr, msgs in traffic.messages.items():
            if msgs:
                p.send_raw(getattr(settings.topics, attr), [(k, v, None) for k, v in msgs]).raise_for_failures()


def produce_raw(settings: Settings, topic_attr: str, items: list[tuple[bytes | None, bytes]]) -> None:
    with Publisher(settings.kafka, settings.topics) as p:
        p.send_raw(getattr(settings.topics, topic_attr), [(k, v, None) for k, v in items]).raise_for_failures()


def run_sink(settings: Settings, until_idle_s: float = 3.0, **kwargs: object) -> SinkSummary:
    return WarehouseSink(settings, until_idle_s=until_idle_s, **kwargs).run()  # type: ignore[arg-type]


def wh_counts(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {name: int(con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]) for name in WAREHOUSE_TABLES}  # type: ignore[index]
    finally:
        con.close()


def expected(traffic: Traffic) -> dict[str, int]:
    return {
        "receipts": traffic.instances, "series_states": traffic.series,
        "instances": traffic.instances, "audit_events": traffic.studies,
    }


def start_sink(settings: Settings, log_file: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m dicomflow warehouse run ARGS`` in its own process group."""
    out = log_file.open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "dicomflow", "warehouse", "run", *args],
            env=to_child_env(settings, os.environ), cwd=log_file.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        out.close()
