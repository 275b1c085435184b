"""A private Kafka + PostgreSQL stack that the suite may kill at will.

The suite SIGKILLs the broker and the database server, so it never touches
the shared development stack: it starts its own :class:`~dicomflow.stack.LocalStack`
in a temporary folder, on free ports, and removes everything afterwards.
The Kafka jars are not downloaded again: the new stack's ``cache`` folder
is a symlink to an existing one when there is one. ``brokers=3`` makes the
Kafka side a three-node cluster (each node on free ports of its own), which
the failover phase kills node by node.

Each phase of the suite (fault run, soak, fuzz) gets its own topics and its
own database from :meth:`PrivateStack.new_phase`, so one phase's checks
never see another phase's messages or rows.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from dicomflow.errors import StackError
from dicomflow.settings import (
    DatabaseSettings,
    KafkaSettings,
    MetricsSettings,
    ReceiverSettings,
    Settings,
    StackSettings,
    StorageSettings,
    TopicSettings,
    to_child_env,
)
from dicomflow.stack import LocalStack, free_ports

log = logging.getLogger(__name__)

#: Ports of the shared development stack: the suite must never start anything there.
SHARED_PORTS = frozenset({19092, 19093, 15432})




def default_cache() -> Path | None:
    """An existing Kafka jar cache to share (``.dicomflow/cache`` here or in the checkout)."""
    checkout = Path(__file__).resolve().parents[2]
    for candidate in (Path.cwd() / ".dicomflow" / "cache", checkout / ".dicomflow" / "cache"):
        if candidate.is_dir():
            return candidate
    return None


@dataclass(frozen=True)
class Phase:
    """Settings of one phase: its own topics, consumer group, database and storage root."""

    name: str
    settings: Settings

    def env(self) -> dict[str, str]:
        """The ``DICOMFLOW_*`` variables that give a ``dicomflow`` subprocess these settings."""
        return to_child_env(self.settings)


def retry_until(what: str, action: Callable[[], object], timeout_s: float, pause_s: float = 1.0) -> None:
    """Call ``action`` until it stops raising :class:`StackError` or ``timeout_s`` passes.

    Why: right after a SIGKILL a service cannot always start at once (the
    orphaned PostgreSQL backends still hold the shared memory for a moment).

    Raises:
        StackError: the last failure, once the time is up.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            action()
            return
        except StackError as exc:
            if time.monotonic() >= deadline:
                raise StackError(f"{what}: still failing after {timeout_s:.0f} s: {exc}") from exc
            log.warning("%s failed, retrying: %s", what, exc)
            time.sleep(pause_s)


class PrivateStack:
    """Start, kill, restart and finally remove a Kafka broker and a PostgreSQL server of our own."""

    def __init__(self, base: Path | None = None, cache: Path | None = None, kafka_heap_mb: int = 512,
                 brokers: int = 1, s3: bool = False) -> None:
        parent = base if base is not None else Path(tempfile.gettempdir())
        parent.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="dicomflow-faults-", dir=parent))
        # PostgreSQL runs as the `postgres` user when we are root: it must reach its folder.
        os.chmod(self.dir, 0o755)
        cache = cache if cache is not None else default_cache()
        if cache is not None:
            (self.dir / "cache").symlink_to(cache.resolve(), target_is_directory=True)
        ports = free_ports(2 * brokers + 2, avoid=SHARED_PORTS)
        kafka_ports, controller_ports = ports[:brokers], ports[brokers:2 * brokers]
        pg_port, s3_port = ports[-2], ports[-1]
        self.stack_settings = StackSettings(
            dir=self.dir, kafka_port=kafka_ports[0], kafka_controller_port=controller_ports[0],
            postgres_port=pg_port, kafka_heap_mb=kafka_heap_mb, kafka_brokers=brokers,
            kafka_ports=tuple(kafka_ports) if brokers > 1 else (),
            kafka_controller_ports=tuple(controller_ports) if brokers > 1 else (),
            s3=s3, s3_port=s3_port,
        )
        self.settings = Settings(
            worker_node_id="faults-1",
            kafka=KafkaSettings(brokers=",".join(f"127.0.0.1:{p}" for p in kafka_ports)),
            database=DatabaseSettings(port=pg_port),
            stack=self.stack_settings,
        )
        self.stack = LocalStack(self.settings)
        self.phases: list[Phase] = []

    # ------------------------------------------------------------------ lifecycle

    def up(self) -> None:
        """Start PostgreSQL and Kafka; returns once both serve requests.

        Raises:
            StackError: a service would not start (details and log file in the message).
        """
        t0 = time.monotonic()
        self.stack.postgres.start()
        self.stack.kafka.start(timeout_s=240.0)
        if self.stack_settings.s3:
            self.stack.s3proxy.start()
            # Its endpoint and credentials, for the phases' settings (drawn at this first start).
            self.settings = self.stack.s3proxy.fill(self.settings)
        log.info("private stack up in %.1f s: Kafka %s, PostgreSQL 127.0.0.1:%s (%s)",
                 time.monotonic() - t0, self.settings.kafka.brokers, self.stack_settings.postgres_port, self.dir)

    def close(self) -> None:
        """Stop both services by their PIDs and remove every file of the stack.

        Safe to call twice and after a partial start. The PostgreSQL cluster
        may live outside ``self.dir`` (see ``PostgresServer._choose_home``):
        its home is removed too when it is one of ours.
        """
        # SIGKILL the broker: its data is deleted next, a controlled shutdown would only cost time.
        for stop in (self.stack.kafka.kill, self._stop_postgres, self.stack.s3proxy.kill):
            try:
                stop()
            except (StackError, OSError) as exc:
                log.warning("stopping the private stack: %s", exc)
        pg_home = self.stack.postgres.home
        shutil.rmtree(self.dir, ignore_errors=True)
        if pg_home.exists() and self.dir not in pg_home.parents and pg_home.parent.name.startswith("dicomflow-"):
            shutil.rmtree(pg_home.parent, ignore_errors=True)

    def _stop_postgres(self) -> None:
        """Immediate shutdown: the data is thrown away anyway."""
        self.stack.postgres.stop(mode="immediate")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ faults

    def kill_kafka(self) -> None:
        """SIGKILL the broker: no controlled shutdown, unflushed log segments recovered at start."""
        self.stack.kafka.kill()

    def start_kafka(self, timeout_s: float = 180.0) -> None:
        """Start the broker again and wait until it serves a produce and a consume.

        Raises:
            StackError: it did not come back within ``timeout_s``.
        """
        retry_until("restarting Kafka", lambda: self.stack.kafka.start(timeout_s=timeout_s), timeout_s)

    def kill_node(self, node_id: int) -> None:
        """SIGKILL one Kafka node of a cluster (its broker and its controller vote go at once)."""
        self.stack.kafka.node(node_id).kill()

    def start_nodes(self, timeout_s: float = 180.0) -> None:
        """Start every Kafka node that is not running and wait until each is back in the cluster.

        Raises:
            StackError: they did not come back within ``timeout_s``.
        """
        retry_until("restarting Kafka nodes", lambda: self.stack.kafka.start(timeout_s=timeout_s), timeout_s)

    def leader_of_busiest(self, topic: str) -> tuple[int, int]:
        """(node id leading the partition of ``topic`` with the most messages, that partition).

        Raises:
            StackError: the cluster did not answer.
        """
        from confluent_kafka import Consumer, KafkaException, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.settings.kafka.brokers, "group.id": "faults-probe",
                             "enable.auto.commit": False, "log_level": 0})
        try:
            described = consumer.list_topics(topic, timeout=10).topics[topic]
            sizes = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                     for p in described.partitions}
            busiest = max(sizes, key=lambda p: (sizes[p], -p))
            return described.partitions[busiest].leader, busiest
        except (KafkaException, KeyError) as exc:
            raise StackError(f"cannot find the leaders of {topic}: {exc}") from exc
        finally:
            consumer.close()

    def kill_s3(self) -> None:
        """SIGKILL S3Proxy: requests in flight fail, the next ones are refused until the restart."""
        self.stack.s3proxy.kill()

    def start_s3(self, timeout_s: float = 60.0) -> None:
        """Start S3Proxy again with the credentials the running components hold; wait until it answers.

        Raises:
            StackError: it did not come back within ``timeout_s``.
        """
        retry_until("restarting S3Proxy", lambda: self.stack.s3proxy.start(timeout_s, keep_credentials=True),
                    timeout_s)

    def kill_postgres(self) -> None:
        """SIGKILL the postmaster: the next start runs crash recovery."""
        self.stack.postgres.kill()

    def start_postgres(self, timeout_s: float = 120.0) -> None:
        """Start PostgreSQL again (crash recovery) and wait until it accepts connections.

        Raises:
            StackError: it did not come back within ``timeout_s``.
        """
        retry_until("restarting PostgreSQL", self.stack.postgres.start, timeout_s)

    # ------------------------------------------------------------------ phases

    def new_phase(self, name: str, *, partitions: int = 3, receiver_port: int = 0, s3: bool = False) -> Phase:
        """Fresh topics, consumer group, database (migrated) and storage root for one phase.

        With ``s3`` the phase stores its instances in the stack's S3Proxy
        (``storage.backend = "s3"``, a key prefix of its own); the storage
        root then holds only local caches.

        Raises:
            StackError: the database could not be created or migrated.
            dicomflow.kafka.exceptions.TopicAdminError: the topics could not be created.
        """
        from dicomflow.kafka.admin import create_topics
        from dicomflow.store import PgStore

        suffix = f"{name}_{uuid.uuid4().hex[:8]}"
        base = TopicSettings()
        topics = dataclasses.replace(
            base,
            main=f"{base.main}_{suffix}", log=f"{base.log}_{suffix}", dicom_state=f"{base.dicom_state}_{suffix}",
            dicom_image=f"{base.dicom_image}_{suffix}", audit=f"{base.audit}_{suffix}",
            dlq=f"{base.main}_{suffix}.dlq", consumer_group_id=f"faults_{suffix}", partitions=partitions,
        )
        database = dataclasses.replace(self.settings.database, dbname=f"faults_{suffix}")
        self._create_database(database)
        with PgStore(database) as store:
            store.migrate()
        create_topics(self.settings.kafka, topics)
        root = self.dir / "phases" / name / "storage"
        root.mkdir(parents=True)
        port = receiver_port or free_ports(1, avoid=SHARED_PORTS)[0]
        phase = Phase(name, dataclasses.replace(
            self.settings,
            worker_node_id=f"faults-{name}",
            topics=topics,
            database=database,
            storage=self._storage(root, f"{suffix}/" if s3 else None),
            receiver=ReceiverSettings(port=port, ae_title="DICOMFLOW"),
            metrics=MetricsSettings(port=0),
        ))
        self.phases.append(phase)
        return phase

    def _storage(self, root: Path, s3_prefix: str | None) -> StorageSettings:
        if s3_prefix is None:
            return StorageSettings(root=root)
        if not self.stack_settings.s3:
            raise StackError("an s3 phase needs a PrivateStack(s3=True)")
        s3 = dataclasses.replace(self.settings.storage.s3, prefix=s3_prefix)
        return StorageSettings(root=root, backend="s3", s3=s3, spool=root.parent / "spool")

    def _create_database(self, database: DatabaseSettings) -> None:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(self.stack.postgres.admin_conninfo(), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database.dbname), sql.Identifier(database.user)))
        except psycopg.Error as exc:
            raise StackError(f"cannot create database {database.dbname}: {exc}") from exc

    def phase_dir(self, phase: Phase) -> Path:
        """A scratch folder of the phase, outside its storage root (sender files, mutated copies)."""
        path = self.dir / "phases" / phase.name / "scratch"
        path.mkdir(parents=True, exist_ok=True)
        return path


__all__ = ["Phase", "PrivateStack", "default_cache", "retry_until"]
