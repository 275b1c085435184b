"""A three-node local Kafka cluster: up, status, topics with RF 3 and min ISR 2, a refused RF, down.

One cluster for the whole module (starting three KRaft nodes costs ~30 s),
in a temporary folder on free ports; the shared stack is only used for its
jar cache.
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.kafka.admin import broker_count, create_topics, delete_topics, describe_topics
from dicomflow.kafka.exceptions import TopicAdminError
from dicomflow.kafka.producer import Publisher
from dicomflow.settings import KafkaSettings, TopicSettings
from dicomflow.stack import KafkaCluster, LocalStack
from dicomflow.stack.state import STATE_FILE, NodeState, StackState, write_state
from tests.integration.kafka_support import dicomflow_cli, private_stack_settings

pytestmark = [
    pytest.mark.slow,
    # The nodes outlive their Popen handles on purpose (a stack keeps running); their __del__ warns.
    pytest.mark.filterwarnings("ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"),
]


@pytest.fixture(scope="module")
def cluster(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    settings = private_stack_settings(tmp_path_factory.mktemp("cluster"), stack.settings, 3)
    kafka = KafkaCluster(settings)
    try:
        kafka.start(timeout_s=240)
        yield kafka
    finally:
        kafka.kill()


def _topics(**changes: object) -> TopicSettings:
    suffix = uuid.uuid4().hex[:8]
    base = TopicSettings()
    return dataclasses.replace(
        base, main=f"c_main_{suffix}", log=f"c_log_{suffix}", dicom_state=f"c_state_{suffix}",
        dicom_image=f"c_image_{suffix}", audit=f"c_audit_{suffix}", dlq=f"c_main_{suffix}.dlq", change=f"c_change_{suffix}", partitions=3,
        **changes)  # type: ignore[arg-type]


def _env(cluster: KafkaCluster, topics: TopicSettings) -> dict[str, str]:
    s = cluster.settings
    return {
        "DICOMFLOW_STACK_DIR": str(s.dir), "DICOMFLOW_STACK_KAFKA_BROKERS": "3",
        "DICOMFLOW_STACK_KAFKA_PORTS": ",".join(map(str, s.kafka_ports)),
        "DICOMFLOW_STACK_KAFKA_CONTROLLER_PORTS": ",".join(map(str, s.kafka_controller_ports)),
        "DICOMFLOW_KAFKA_BROKERS": cluster.bootstrap, "DICOMFLOW_TOPICS_MAIN": topics.main,
        "DICOMFLOW_TOPICS_LOG": topics.log, "DICOMFLOW_TOPICS_DICOM_STATE": topics.dicom_state,
        "DICOMFLOW_TOPICS_DICOM_IMAGE": topics.dicom_image, "DICOMFLOW_TOPICS_AUDIT": topics.audit,
        "DICOMFLOW_TOPICS_DLQ": topics.dlq, "DICOMFLOW_TOPICS_PARTITIONS": "3",
    }


def test_every_node_runs_in_its_own_folder_on_its_own_ports(cluster: KafkaCluster, tmp_path: Path) -> None:
    statuses = cluster.status()
    assert [s.node_id for s in statuses] == [1, 2, 3]
    assert all(s.running and s.pid for s in statuses)
    assert len({s.pid for s in statuses}) == 3 and len({s.bootstrap for s in statuses}) == 3
    assert len({s.log_file.parent for s in statuses}) == 3 and all(s.log_file.exists() for s in statuses)
    assert broker_count(KafkaSettings(brokers=cluster.bootstrap)) == 3
    # What `dicomflow stack status` shows for the same settings: every node, then PostgreSQL.
    out = dicomflow_cli("stack", "status", env=_env(cluster, _topics()), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    for s in statuses:
        assert f"kafka-{s.node_id}" in out.stdout and str(s.pid) in out.stdout and s.bootstrap in out.stdout


def test_topics_get_three_replicas_and_min_isr_two_by_default(cluster: KafkaCluster, tmp_path: Path) -> None:
    kafka = KafkaSettings(brokers=cluster.bootstrap)
    topics = _topics()
    try:
        outcomes = create_topics(kafka, topics)
        assert {(o.action, o.replication_factor, o.min_insync_replicas) for o in outcomes} == {("created", 3, 2)}
        infos = describe_topics(kafka, topics.all())
        assert {(i.partitions, i.replication_factor, i.min_insync_replicas) for i in infos} == {(3, 3, 2)}
        with Publisher(kafka, topics) as pub:  # acks=all on RF 3 / min ISR 2
            assert pub.send_raw(topics.main, [(b"k", b"v", None)] * 20, timeout_s=30).ok
        out = dicomflow_cli("topics", "list", env=_env(cluster, topics), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "min ISR" in out.stdout
        row = next(line for line in out.stdout.splitlines() if f"│ {topics.audit} " in line)
        assert [cell.strip() for cell in row.split("│")[2:5]] == ["3", "3", "2"], out.stdout
        out = dicomflow_cli("topics", "list", "--json", env=_env(cluster, topics), cwd=tmp_path)
        listed = {t["name"]: t for t in json.loads(out.stdout)["topics"]}
        assert (listed[topics.audit]["replication_factor"], listed[topics.audit]["min_insync_replicas"]) == (3, 2)
    finally:
        delete_topics(kafka, topics.all())


def test_a_replication_factor_above_the_broker_count_is_refused(cluster: KafkaCluster, tmp_path: Path) -> None:
    kafka = KafkaSettings(brokers=cluster.bootstrap)
    topics = _topics(replication_factor=4)
    with pytest.raises(TopicAdminError, match=r"replication_factor is 4 .* only 3 broker"):
        create_topics(kafka, topics)
    assert not any(i.exists for i in describe_topics(kafka, topics.all()))
    out = dicomflow_cli("topics", "create", env={**_env(cluster, topics), "DICOMFLOW_TOPICS_REPLICATION_FACTOR": "4"},
                        cwd=tmp_path)
    assert out.returncode == 1 and "4" in out.stderr and "only 3 broker" in out.stderr, out.stderr


def _state_of(cluster: KafkaCluster) -> StackState:
    """What `stack up --brokers 3` leaves in the stack folder for this cluster."""
    return StackState(tuple(NodeState(n.node_id, n.port, n.controller_port) for n in cluster.layout.nodes))


def test_status_and_fresh_clients_follow_the_state_of_up(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Told nothing but the stack folder, `stack status` sees three nodes, and a client started while node 1
    is down reaches the cluster: its default kafka.brokers is every node of the stack."""
    write_state(cluster.settings.dir, _state_of(cluster))
    topics = _topics()
    env = {"DICOMFLOW_STACK_DIR": str(cluster.settings.dir), "DICOMFLOW_STACK_POSTGRES_PORT": "1",
           "DICOMFLOW_TOPICS_MAIN": topics.main, "DICOMFLOW_TOPICS_LOG": topics.log,
           "DICOMFLOW_TOPICS_DICOM_STATE": topics.dicom_state, "DICOMFLOW_TOPICS_DICOM_IMAGE": topics.dicom_image,
           "DICOMFLOW_TOPICS_AUDIT": topics.audit, "DICOMFLOW_TOPICS_DLQ": topics.dlq}
    out = dicomflow_cli("stack", "status", "--json", env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["kafka"] == {"brokers": cluster.bootstrap, "nodes": 3, "secure": False}
    assert data["state_file"] == str(Path(cluster.settings.dir).resolve() / STATE_FILE)
    assert [(s["name"], s["running"], s["pid"], s["address"]) for s in data["services"][:3]] == [
        (f"kafka-{s.node_id}", True, s.pid, s.bootstrap) for s in cluster.status()]
    kafka = KafkaSettings(brokers=cluster.bootstrap)
    create_topics(kafka, topics)
    cluster.node(1).kill()
    try:
        out = dicomflow_cli("topics", "list", "--json", "--timeout", "30", env=env, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        listed = json.loads(out.stdout)
        assert listed["brokers"] == cluster.bootstrap
        assert {t["name"]: t["partitions"] for t in listed["topics"]}[topics.main] == 3
    finally:
        cluster.start_node(1)
        delete_topics(kafka, topics.all())


def test_down_stops_every_node(cluster: KafkaCluster, tmp_path: Path) -> None:
    """Last in the module: `dicomflow stack down` with the cluster's settings stops all three nodes."""
    pids = [s.pid for s in cluster.status()]
    write_state(cluster.settings.dir, _state_of(cluster))
    env = {**_env(cluster, _topics()), "DICOMFLOW_STACK_POSTGRES_PORT": "1", "DICOMFLOW_DATABASE_PORT": "1"}
    out = dicomflow_cli("stack", "down", env=env, cwd=tmp_path, timeout_s=120)
    assert out.returncode == 0, out.stderr
    assert not any(s.running for s in cluster.status()), pids
    assert not list(Path(cluster.settings.dir).glob("kafka-cluster-3/node-*/kafka.pid"))
    assert not (Path(cluster.settings.dir) / STATE_FILE).exists()  # the stack forgets what it started
