"""Topic administration against the real broker, through the library and the CLI."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner

from dicomflow.cli import app
from dicomflow.kafka.admin import create_topics, delete_topics, describe_topics
from dicomflow.kafka.dlq import dead_letter_topic
from dicomflow.kafka.exceptions import TopicAdminError
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import message_counts, read_all
from dicomflow.settings import KafkaSettings, Settings, TopicSettings
from dicomflow.stack import free_port
from dicomflow.warehouse.schema import TABLES


@pytest.fixture
def kafka(base_settings: Settings) -> KafkaSettings:
    return base_settings.kafka


@pytest.fixture
def own_topics(kafka: KafkaSettings, topics: TopicSettings) -> Iterator[TopicSettings]:
    """The test's topic names, with a retention of its own; deleted afterwards whatever happened."""
    mine = dataclasses.replace(topics, partitions=4, retention_ms=3 * 3600 * 1000)
    yield mine
    delete_topics(kafka, mine.all())


def test_create_makes_every_topic_with_partitions_replication_and_retention(
    kafka: KafkaSettings, own_topics: TopicSettings
) -> None:
    assert not any(t.exists for t in describe_topics(kafka, own_topics.all()))

    outcomes = create_topics(kafka, own_topics)

    assert [(o.name, o.action) for o in outcomes] == [(n, "created") for n in own_topics.all()]
    assert {o.name for o in outcomes} >= {own_topics.audit, own_topics.dlq}
    # The warehouse sink's dead-letter topics exist before any poison message needs them.
    dlqs = {f"{t}.dlq" for t in (own_topics.log, own_topics.dicom_state, own_topics.dicom_image, own_topics.audit)}
    assert dlqs == {dead_letter_topic(getattr(own_topics, t.topic_attr)) for t in TABLES}
    assert dlqs <= {o.name for o in outcomes} and len(outcomes) == 11  # dicom_change_queue too
    for info in describe_topics(kafka, own_topics.all()):
        assert (info.partitions, info.replication_factor, info.retention_ms) == (4, 1, 3 * 3600 * 1000), info


def test_create_again_changes_nothing(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    create_topics(kafka, own_topics)
    before = describe_topics(kafka, own_topics.all())

    again = create_topics(kafka, own_topics)

    assert [o.action for o in again] == ["exists"] * 11
    assert all(o.drift == () for o in again)
    assert describe_topics(kafka, own_topics.all()) == before


def test_an_existing_topic_that_differs_is_reported_not_altered(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    create_topics(kafka, dataclasses.replace(own_topics, partitions=1))

    outcomes = {o.name: o for o in create_topics(kafka, own_topics)}

    main = outcomes[own_topics.main]
    assert main.action == "exists" and main.partitions == 1
    assert main.drift == ("1 partition(s), settings say 4",)
    # Adding partitions would move series keys to other partitions: left as it is.
    assert describe_topics(kafka, [own_topics.main])[0].partitions == 1


def test_cli_create_then_list(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    env = {
        "DICOMFLOW_TOPICS_MAIN": own_topics.main, "DICOMFLOW_TOPICS_LOG": own_topics.log,
        "DICOMFLOW_TOPICS_DICOM_STATE": own_topics.dicom_state, "DICOMFLOW_TOPICS_DICOM_IMAGE": own_topics.dicom_image,
        "DICOMFLOW_TOPICS_AUDIT": own_topics.audit, "DICOMFLOW_TOPICS_DLQ": own_topics.dlq,
        "DICOMFLOW_TOPICS_CHANGE": own_topics.change,
        "DICOMFLOW_TOPICS_PARTITIONS": "2", "COLUMNS": "200",
    }
    runner = CliRunner()

    listed_before = runner.invoke(app, ["topics", "list"], env=env)
    created = runner.invoke(app, ["topics", "create"], env=env)
    created_again = runner.invoke(app, ["topics", "create"], env=env)
    listed = runner.invoke(app, ["topics", "list"], env=env)

    assert [r.exit_code for r in (listed_before, created, created_again, listed)] == [0, 0, 0, 0], created.output
    rows = {line.split("│")[1].strip(): line for line in listed.output.splitlines() if line.count("│") > 2}
    for name in own_topics.all():
        assert "missing" in next(line for line in listed_before.output.splitlines() if f" {name} " in line)
        assert "created" in next(line for line in created.output.splitlines() if f" {name} " in line)
        assert "exists" in next(line for line in created_again.output.splitlines() if f" {name} " in line)
        cells = [c.strip() for c in rows[name].split("│")]
        assert cells[2] == "2"  # partitions
    assert all(t.partitions == 2 for t in describe_topics(kafka, own_topics.all()))


def test_read_all_of_a_missing_topic_says_so(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    with pytest.raises(TopicAdminError, match=own_topics.main):
        read_all(kafka, own_topics.main, timeout_s=10)
    # ... and asking did not create it.
    assert not describe_topics(kafka, [own_topics.main])[0].exists


def test_read_all_of_an_empty_topic_is_empty(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    create_topics(kafka, own_topics)
    assert read_all(kafka, own_topics.log, timeout_s=10) == []


def test_message_counts_sum_every_partition_and_give_zero_for_a_missing_topic(
    kafka: KafkaSettings, own_topics: TopicSettings
) -> None:
    create_topics(kafka, own_topics)
    with Publisher(kafka, own_topics) as p:  # keys spread the messages over the topic's partitions
        p.send_raw(own_topics.log, [(f"k{n}".encode(), b"{}", None) for n in range(25)]).raise_for_failures()
        p.send_raw(own_topics.audit, [(b"a", b"{}", None)] * 3).raise_for_failures()
    assert len({r.partition for r in read_all(kafka, own_topics.log, timeout_s=30)}) > 1
    missing = own_topics.main + "-never-created"
    counts = message_counts(kafka, [own_topics.log, own_topics.audit, own_topics.main, missing])
    assert counts == {own_topics.log: 25, own_topics.audit: 3, own_topics.main: 0, missing: 0}


def test_an_unreachable_broker_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(TopicAdminError, match=f"127.0.0.1:{port}"):
        create_topics(KafkaSettings(brokers=f"127.0.0.1:{port}"), TopicSettings(), timeout_s=2)


def test_topics_are_visible_to_other_clients_once_create_returns(kafka: KafkaSettings, own_topics: TopicSettings) -> None:
    create_topics(kafka, own_topics)
    metadata = AdminClient({"bootstrap.servers": kafka.brokers}).list_topics(timeout=10)
    for name in own_topics.all():
        assert len(metadata.topics[name].partitions) == 4
