"""Pure logic of the cluster: node layout and ports, derived replication, auth-failure recognition."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from dicomflow.errors import StackError
from dicomflow.kafka._auth import AuthWatch, auth_failure
from dicomflow.kafka.admin import replication_for
from dicomflow.kafka.exceptions import KafkaAuthError, TopicAdminError
from dicomflow.settings import StackSettings, TopicSettings
from dicomflow.stack import ClusterLayout, KafkaBroker


def test_the_single_node_keeps_its_folder_and_ports() -> None:
    layout = ClusterLayout.of(StackSettings(dir=Path("/s")))
    assert layout.size == 1 and layout.bootstrap == "127.0.0.1:19092"
    assert layout.nodes[0].home == Path("/s/kafka") and layout.voters == "1@127.0.0.1:19093"


def test_three_nodes_get_their_own_folders_and_ports() -> None:
    layout = ClusterLayout.of(StackSettings(dir=Path("/s"), kafka_brokers=3))
    assert [n.home for n in layout.nodes] == [Path(f"/s/kafka-cluster-3/node-{i}") for i in (1, 2, 3)]
    assert layout.bootstrap == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert layout.voters == "1@127.0.0.1:19093,2@127.0.0.1:19095,3@127.0.0.1:19097"
    explicit = ClusterLayout.of(StackSettings(dir=Path("/s"), kafka_brokers=2, kafka_ports=(5, 7),
                                              kafka_controller_ports=(6, 8)), secure=True)
    assert [(n.port, n.controller_port) for n in explicit.nodes] == [(5, 6), (7, 8)]
    assert explicit.root == Path("/s/kafka-cluster-2-secure")
    with pytest.raises(StackError, match=r"stack\.kafka_ports lists 1 port"):
        ClusterLayout.of(StackSettings(dir=Path("/s"), kafka_brokers=3, kafka_ports=(5,)))


def test_nodes_formatted_in_parallel_all_get_the_one_cluster_id(tmp_path: Path) -> None:
    """Three nodes reading the id at once (as the parallel format does) agree; a node with another
    id could never vote with the others and gives up registering after 60 s."""
    settings = StackSettings(dir=tmp_path, kafka_brokers=3)
    layout = ClusterLayout.of(settings)
    for attempt in range(20):
        (layout.root / "cluster.id").unlink(missing_ok=True)
        nodes = [KafkaBroker(settings, spec, layout) for spec in layout.nodes] * 3
        barrier = threading.Barrier(len(nodes))

        def read(node: KafkaBroker, barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            return node._cluster_id()

        with ThreadPoolExecutor(len(nodes)) as pool:
            ids = set(pool.map(read, nodes))
        assert len(ids) == 1, (attempt, ids)
        assert (layout.root / "cluster.id").read_text().strip() in ids
    assert sorted(p.name for p in layout.root.iterdir()) == ["cluster.id"]  # no draft left behind


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage tool would read ``-t -01D5...`` as a missing argument (a CI run failed on one)."""
    import uuid

    from dicomflow.stack import _kafka

    dash_first = uuid.UUID(bytes=bytes([0xFB, 0x4D]) + bytes(14))  # base64 "-00AAAA..."
    drawn = iter([dash_first, uuid.UUID(int=1)])
    monkeypatch.setattr(_kafka.uuid, "uuid4", lambda: next(drawn))
    assert _kafka.new_cluster_id() == "AAAAAAAAAAAAAAAAAAAAAQ"
    monkeypatch.undo()
    assert not any(_kafka.new_cluster_id().startswith("-") for _ in range(2000))


def test_a_node_formatted_for_another_cluster_is_refused_by_name(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path, kafka_brokers=3)
    layout = ClusterLayout.of(settings)
    node = KafkaBroker(settings, layout.nodes[1], layout)
    wanted = node._cluster_id()
    node.data.mkdir(parents=True)
    (node.data / "meta.properties").write_text(f"node.id=2\ncluster.id={wanted}\nversion=1\n")
    node._format(node.home / "server.properties")  # formatted for this cluster: nothing to do
    (node.data / "meta.properties").write_text("node.id=2\ncluster.id=someOtherClusterId\nversion=1\n")
    with pytest.raises(StackError, match=rf"Kafka node 2 .* formatted for cluster someOtherClusterId.* is {wanted}"):
        node._format(node.home / "server.properties")


@pytest.mark.parametrize(("brokers", "rf", "isr", "expected"), [
    (1, 0, 0, (1, 1)), (2, 0, 0, (2, 1)), (3, 0, 0, (3, 2)), (5, 0, 0, (3, 2)), (5, 5, 0, (5, 4)), (3, 3, 3, (3, 3)),
])
def test_replication_is_derived_from_the_broker_count(brokers: int, rf: int, isr: int, expected: tuple[int, int]) -> None:
    assert replication_for(TopicSettings(replication_factor=rf, min_insync_replicas=isr), brokers) == expected


def test_a_replication_factor_above_the_broker_count_names_both() -> None:
    with pytest.raises(TopicAdminError, match=r"replication_factor is 3 but the cluster has only 1 broker"):
        replication_for(TopicSettings(replication_factor=3), 1)
    with pytest.raises(TopicAdminError, match="min_insync_replicas is 4, more than the replication factor 3"):
        replication_for(TopicSettings(replication_factor=3, min_insync_replicas=4), 3)


def test_auth_and_tls_failures_are_told_from_a_broker_that_is_down() -> None:
    assert auth_failure(KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error"))
    assert auth_failure(KafkaError(KafkaError._SSL, "SSL handshake failed"))
    assert auth_failure(KafkaError(KafkaError._TRANSPORT, "ssl://b:1/bootstrap: certificate verify failed"))
    assert not auth_failure(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert not auth_failure(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))

    seen: list[KafkaAuthError] = []
    watch = AuthWatch("b:1", "producer", on_failure=seen.append)
    watch(KafkaError(KafkaError._TRANSPORT, "Connection refused"))
    assert watch.failure is None
    watch(KafkaError(KafkaError._AUTHENTICATION, "sasl_ssl://b:1/bootstrap: SASL authentication error"))
    with pytest.raises(KafkaAuthError, match=r"producer: Kafka at b:1 refused .* check kafka.client sasl.username"):
        watch.check()
    assert len(seen) == 1
