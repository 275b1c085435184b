"""The local stack serves real requests: a produce + consume, and SQL."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Consumer, Producer

from dicomflow.settings import Settings
from dicomflow.stack import LocalStack
from tests.integration.kafka_support import dicomflow_cli


def test_status_reports_both_services_with_pids(stack: LocalStack) -> None:
    statuses = {s.name: s for s in stack.status()}
    assert statuses["kafka"].running and statuses["kafka"].pid
    assert statuses["postgresql"].running and statuses["postgresql"].pid
    assert statuses["kafka"].address == f"127.0.0.1:{stack.settings.stack.kafka_port}"


def test_status_as_json_names_every_service_with_its_pid(stack: LocalStack, tmp_path: Path) -> None:
    out = dicomflow_cli("stack", "status", "--json", "--check", env={"DICOMFLOW_STACK_DIR": str(stack.settings.stack.dir.resolve())},
                        cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"stack_dir", "state_file", "kafka", "services", "all_running"} and data["all_running"]
    assert data["kafka"] == {"brokers": stack.kafka.bootstrap, "nodes": 1, "secure": False}
    assert [(s["name"], s["running"], s["pid"], s["address"], s["log_file"]) for s in data["services"]] == [
        (s.name, s.running, s.pid, s.address, s.log_file) for s in stack.status()]


def test_up_twice_is_harmless(stack: LocalStack) -> None:
    before = {s.name: s.pid for s in stack.status()}
    stack.up()
    after = {s.name: s.pid for s in stack.status()}
    assert before == after


def test_kafka_round_trip(settings: Settings) -> None:
    token = uuid.uuid4().bytes
    producer = Producer({"bootstrap.servers": settings.kafka.brokers, "acks": "all", "enable.idempotence": True})
    producer.produce(settings.topics.main, token, key=b"k")
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": settings.topics.consumer_group_id,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([settings.topics.main])
    try:
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                assert msg.value() == token
                assert msg.key() == b"k"
                break
        else:
            raise AssertionError("record not read back")
    finally:
        consumer.close()


def test_postgres_accepts_the_dicomflow_role(settings: Settings) -> None:
    with psycopg.connect(settings.database.conninfo()) as conn:
        row = conn.execute("SELECT current_user, current_database()").fetchone()
    assert row == (settings.database.user, settings.database.dbname)
