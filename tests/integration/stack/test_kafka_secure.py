"""A SASL_SSL Kafka (SCRAM-SHA-512, a test CA generated at start): every client works with only
``[kafka.client]`` settings; a wrong password or an untrusted CA is a clear error within seconds.

One secure broker for the module, in a temporary folder on free ports.
"""

from __future__ import annotations

import dataclasses
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.errors import ConsumerError
from dicomflow.kafka.admin import create_topics, delete_topics, describe_topics
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.exceptions import KafkaAuthError, TopicAdminError
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.settings import KafkaSettings, Settings, TopicSettings, load_settings
from dicomflow.stack import KafkaCluster, LocalCA, LocalStack
from tests.integration.kafka_support import dicomflow_cli, private_stack_settings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning"),
]

#: "Within seconds": a refused connection must be reported well before any client timeout (30 s).
FAST_S = 10.0


@pytest.fixture(scope="module")
def secure(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    settings = private_stack_settings(tmp_path_factory.mktemp("secure"), stack.settings, 1)
    kafka = KafkaCluster(settings, secure=True)
    try:
        kafka.start(timeout_s=180)
        yield kafka
    finally:
        kafka.kill()


@pytest.fixture
def client(secure: KafkaCluster) -> Settings:
    """The settings a client gets from the generated file, and nothing else."""
    assert secure.security() is not None
    return load_settings(secure.security().client_settings_file, {})  # type: ignore[union-attr]


def _topics() -> TopicSettings:
    s = uuid.uuid4().hex[:8]
    return dataclasses.replace(TopicSettings(), main=f"s_main_{s}", log=f"s_log_{s}", dicom_state=f"s_state_{s}",
                               dicom_image=f"s_image_{s}", audit=f"s_audit_{s}", dlq=f"s_main_{s}.dlq", partitions=1,
                               change=f"s_change_{s}", consumer_group_id=f"s_group_{s}")


def _with_client(kafka: KafkaSettings, **changes: str) -> KafkaSettings:
    return dataclasses.replace(kafka, client={**kafka.client, **changes})


def test_the_broker_listens_only_with_sasl_ssl_and_secrets_are_private(secure: KafkaCluster, client: Settings) -> None:
    security = secure.security()
    assert security is not None
    props = (secure.nodes[0].home / "server.properties").read_text()
    assert f"listeners=SASL_SSL://127.0.0.1:{secure.nodes[0].spec.port}," in props and "PLAINTEXT://" not in props
    for private in (security.client_settings_file, secure.settings.dir / "kafka-secrets.json",
                    secure.nodes[0].home / "server.properties", secure.settings.dir / "tls" / "ca-key.pem",
                    security.keystore_file):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert dict(client.kafka.client) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "dicomflow",
        "sasl.password": security.client_password, "ssl.ca.location": str(security.ca_file),
    }


def test_admin_producer_and_consumer_work_with_only_kafka_client_settings(client: Settings) -> None:
    kafka, topics = client.kafka, _topics()
    try:
        assert {o.action for o in create_topics(kafka, topics)} == {"created"}
        with Publisher(kafka, topics) as pub:
            assert pub.send_raw(topics.main, [(b"k", f"v{i}".encode(), None) for i in range(10)], timeout_s=30).ok
        consumer = KafkaConsumer(kafka, group_id=topics.consumer_group_id)
        try:
            consumer.subscribe([topics.main])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < 10 and time.monotonic() < deadline:
                got += [r.value or b"" for r in consumer.consume(100, 0.5)]
        finally:
            consumer.close()
        assert got == [f"v{i}".encode() for i in range(10)]
        assert len(read_all(kafka, topics.main)) == 10
    finally:
        delete_topics(kafka, topics.all())


def test_the_cli_works_with_the_generated_settings_file(secure: KafkaCluster, tmp_path: Path) -> None:
    security = secure.security()
    assert security is not None
    topics = _topics()
    env = {"DICOMFLOW_CONFIG": str(security.client_settings_file), "DICOMFLOW_TOPICS_MAIN": topics.main,
           "DICOMFLOW_TOPICS_LOG": topics.log, "DICOMFLOW_TOPICS_DICOM_STATE": topics.dicom_state,
           "DICOMFLOW_TOPICS_DICOM_IMAGE": topics.dicom_image, "DICOMFLOW_TOPICS_AUDIT": topics.audit,
           "DICOMFLOW_TOPICS_DLQ": topics.dlq}
    try:
        out = dicomflow_cli("topics", "create", env=env, cwd=tmp_path)
        assert out.returncode == 0 and "created" in out.stdout, out.stdout + out.stderr
    finally:
        delete_topics(load_settings(security.client_settings_file, {}).kafka, topics.all())


@pytest.mark.parametrize("problem", ["wrong password", "untrusted CA"])
def test_a_refused_connection_is_a_clear_error_within_seconds(
    problem: str, client: Settings, secure: KafkaCluster, tmp_path: Path
) -> None:
    if problem == "wrong password":
        kafka, expected = _with_client(client.kafka, **{"sasl.password": "not-the-password"}), "sasl.password"
    else:  # a CA of its own, which never signed the broker's certificate
        other = LocalCA(tmp_path / "other-ca").ensure()
        kafka, expected = _with_client(client.kafka, **{"ssl.ca.location": str(other.cert_file)}), "ssl.ca.location"
    broker = secure.nodes[0].bootstrap
    topics = _topics()

    t0 = time.monotonic()
    with pytest.raises(TopicAdminError) as admin_error:
        describe_topics(kafka, topics.all(), timeout_s=30)
    assert time.monotonic() - t0 < FAST_S
    assert broker in str(admin_error.value) and expected in str(admin_error.value)

    t0 = time.monotonic()
    pub = Publisher(kafka, topics)
    result = pub.send_raw(topics.main, [(b"k", b"v", None)], timeout_s=30)
    assert not result.ok and broker in result.failures[0].reason and expected in result.failures[0].reason
    with pytest.raises(KafkaAuthError, match=expected):  # and the next send is refused at once
        pub.send_raw(topics.main, [(b"k", b"v", None)], timeout_s=30)
    pub.close()
    assert time.monotonic() - t0 < FAST_S

    t0 = time.monotonic()
    consumer = KafkaConsumer(kafka, group_id=topics.consumer_group_id)
    try:
        consumer.subscribe([topics.main])
        with pytest.raises(ConsumerError) as consumer_error:
            while time.monotonic() - t0 < 30:
                consumer.consume(10, 0.5)
    finally:
        consumer.close()
    assert time.monotonic() - t0 < FAST_S
    assert consumer_error.value.fatal and broker in str(consumer_error.value)
