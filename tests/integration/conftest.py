"""Integration fixtures: a real Kafka broker and a real PostgreSQL server.

The session fixture uses the running local stack or starts it
(``dicomflow stack up`` does the same). Each test gets its own topics, consumer
group, database and storage root, so tests never see each other's data.

The stack location and ports come from the same ``DICOMFLOW_*`` variables as
the CLI (``DICOMFLOW_STACK_DIR``, ``DICOMFLOW_STACK_KAFKA_PORT`` ...).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.settings import DatabaseSettings, Settings, TopicSettings, load_settings
from dicomflow.stack import LocalStack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> LocalStack:
    """The local stack with its S3Proxy, started if it is not running (left running for the next session).

    Built again after ``up``: its settings name the S3Proxy (endpoint, credentials) only once it runs.
    """
    base = load_settings(None, os.environ)
    LocalStack(base).up(s3=True)
    return LocalStack(base)


@pytest.fixture(scope="session")
def base_settings(stack: LocalStack) -> Settings:
    return stack.settings


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.fixture
def topics(base_settings: Settings) -> Iterator[TopicSettings]:
    """Fresh topic names and consumer group for one test; whichever of them the test created are deleted after it.

    Left behind, they piled up on the one broker: about 11 topics of 3 partitions per test, and a day of
    runs left 4,700 topics (15,000 partition folders) until the broker ran out of heap.
    """
    suffix = uuid.uuid4().hex[:10]
    t = base_settings.topics
    fresh = dataclasses.replace(
        t,
        main=f"{t.main}_{suffix}",
        log=f"{t.log}_{suffix}",
        dicom_state=f"{t.dicom_state}_{suffix}",
        dicom_image=f"{t.dicom_image}_{suffix}",
        audit=f"{t.audit}_{suffix}",
        dlq=f"{t.main}_{suffix}.dlq",
        change=f"{t.change}_{suffix}",
        consumer_group_id=f"{t.consumer_group_id}_{suffix}",
        partitions=3,
    )
    yield fresh
    _drop_topics(base_settings, fresh.all())


def _drop_topics(base_settings: Settings, names: tuple[str, ...]) -> None:
    """Delete ``names`` where they exist (the others answer unknown, ignored); a broker that is down or slow
    only leaves them behind, it never fails the test."""
    from dicomflow.kafka.admin import delete_topics

    try:
        delete_topics(base_settings.kafka, names, timeout_s=10.0)
    except Exception as exc:  # noqa: BLE001 - cleanup only
        logging.getLogger(__name__).warning("could not delete the test's topics: %s", exc)


@pytest.fixture
def database(stack: LocalStack) -> Iterator[DatabaseSettings]:
    """A fresh, empty database owned by the dicomflow role; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = _unique("dicomflow_test")
    admin = stack.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(stack.settings.database.user)))
    yield dataclasses.replace(stack.settings.database, dbname=name)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def settings(base_settings: Settings, topics: TopicSettings, database: DatabaseSettings, tmp_path: Path) -> Settings:
    """Settings for one test: own topics, group, database and storage root."""
    root = tmp_path / "storage"
    root.mkdir()
    return dataclasses.replace(
        base_settings,
        topics=topics,
        database=database,
        storage=dataclasses.replace(base_settings.storage, root=root),
    )
