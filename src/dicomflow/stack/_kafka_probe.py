"""Whether a local Kafka serves clients: a produce (acks=all) and a consume of the same record.

A listening port is not enough: a node serves clients only once the
controller quorum has a leader and, on a cluster, the node is registered in
the metadata. :func:`wait_served` produces one record and reads it back,
retrying until that works or the time is up
(:meth:`~dicomflow.stack._kafka.KafkaBroker.wait_ready` for one node).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping

from dicomflow.errors import StackError


def wait_served(target: str, extra: Mapping[str, str], timeout_s: float, *, node_id: int | None = None) -> None:
    """Return once a record produced through ``target`` (acks=all) is read back from it.

    ``extra``: librdkafka properties of the probe's clients (credentials on a
    secure stack). ``node_id``, on a cluster: that node must be registered in
    the cluster's metadata first.

    Raises:
        StackError: no produce and consume succeeded within ``timeout_s``.
    """
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

    deadline = time.monotonic() + timeout_s
    topic = "__dicomflow_probe"
    token = uuid.uuid4().hex.encode()
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            producer = Producer({"bootstrap.servers": target, "acks": "all",
                                 "message.timeout.ms": 10000, "log_level": 0, **extra})
            if node_id is not None:
                brokers = producer.list_topics(timeout=5).brokers
                if node_id not in brokers:
                    last_error = f"node {node_id} not registered yet"
                    time.sleep(0.5)
                    continue
            errors: list[str] = []
            offsets: list[tuple[int, int]] = []

            def on_delivery(err: object, msg: object) -> None:
                if err is not None:
                    errors.append(str(err))  # noqa: B023 - called during this iteration's flush
                else:
                    offsets.append((msg.partition(), msg.offset()))  # type: ignore[attr-defined]  # noqa: B023 - ditto

            producer.produce(topic, token, on_delivery=on_delivery)
            producer.flush(15)
            if errors or not offsets:
                last_error = errors[0] if errors else "produce not acknowledged"
                time.sleep(0.5)
                continue
            partition, offset = offsets[0]
            consumer = Consumer({"bootstrap.servers": target, "group.id": "__dicomflow_probe",
                                 "enable.auto.commit": False, "log_level": 0, **extra})
            try:
                consumer.assign([TopicPartition(topic, partition, offset)])
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    msg = consumer.poll(0.5)
                    if msg is not None and msg.error() is None and msg.value() == token:
                        return
            finally:
                consumer.close()
            last_error = "produced record not read back"
        except KafkaException as exc:
            last_error = str(exc)
            time.sleep(0.5)
    raise StackError(f"Kafka at {target} did not serve a produce and a consume within {timeout_s:.0f} s: {last_error}")
