"""The publisher against a real broker: topics, keys, payloads, duplicates, backpressure, failures."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import itertools
import struct
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.delivery import BatchResult
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.reader import read_all
from dicomflow.kafka.records import Record
from dicomflow.models import (
    ActiveParticipant,
    AuditEvent,
    CodedValue,
    DicomImageMeta,
    DicomStateMeta,
    DicomStoreMeta,
    ParticipantObject,
    decode,
    encode,
    md5_key,
    series_key,
    uid_hash,
)
from dicomflow.settings import Compression, KafkaSettings, Settings, StackSettings, TopicSettings
from dicomflow.stack import KafkaBroker, LocalStack, free_port, free_ports

# ---------------------------------------------------------------- messages


def store_event(n: int, series: int = 0, trace_id: str | None = None, tenant: str = "t1") -> DicomStoreMeta:
    study, series_uid, sop = "1.2.826.0.1.1", f"1.2.826.0.1.1.{series}", f"1.2.826.0.1.1.{series}.{n}"
    return DicomStoreMeta(
        trace_id=trace_id or str(uuid.uuid4()), worker_node_id="node-1", tenant_id=tenant, patient_id="PID-1",
        study_uid=study, series_uid=series_uid, sop_uid=sop, file_size=1000 + n,
        file_path=f"/data/{tenant}/{study}/{series_uid}/{sop}.dcm", transfer_syntax_uid="1.2.840.10008.1.2.1",
        number_of_frames=1, created_time=dt.datetime(2024, 5, 6, 7, 8, 9, 123456), series_uid_hash=uid_hash(series_uid),
        study_uid_hash=uid_hash(study), accession_number="ACC-1", target_ts="1.2.840.10008.1.2.1",
        study_date=dt.date(2024, 5, 6), transfer_status="NoNeedTransfer", source_ip="127.0.0.1", source_ae="MODALITY",
    )


def state(series: int) -> DicomStateMeta:
    study, series_uid = "1.2.826.0.1.1", f"1.2.826.0.1.1.{series}"
    return DicomStateMeta(
        tenant_id="t1", patient_id="PID-1", study_uid=study, series_uid=series_uid, study_uid_hash=uid_hash(study),
        series_uid_hash=uid_hash(series_uid), study_date_origin="20240506", patient_name="Yamada^Tarou=山田^太郎",
        patient_sex="M", study_date=dt.date(2024, 5, 6), study_time=dt.time(7, 8, 9), modality="CT",
        series_number=series, series_related_instances=3, created_time=dt.datetime(2024, 5, 6, 7, 8, 9),
        updated_time=dt.datetime(2024, 5, 6, 7, 8, 10, 5),
    )


def image(series: int, n: int) -> DicomImageMeta:
    study, series_uid = "1.2.826.0.1.1", f"1.2.826.0.1.1.{series}"
    return DicomImageMeta(
        tenant_id="t1", patient_id="PID-1", study_uid=study, series_uid=series_uid, sop_uid=f"{series_uid}.{n}",
        study_uid_hash=uid_hash(study), series_uid_hash=uid_hash(series_uid), instance_number=n,
        image_type="ORIGINAL\\PRIMARY\\AXIAL", image_position_patient="-125\\-125\\10.5", slice_thickness=2.5,
        width=512, columns=512, transfer_syntax_uid="1.2.840.10008.1.2.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        image_status="ACTIVE", space_size=525312, created_time=dt.datetime(2024, 5, 6, 7, 8, 9),
        updated_time=dt.datetime(2024, 5, 6, 7, 8, 9),
    )


def audit(tenant: str) -> AuditEvent:
    return AuditEvent(
        event_id=CodedValue(code="110104", meaning="DICOM Instances Transferred"), event_action="C",
        event_date_time=dt.datetime(2024, 5, 6, 7, 8, 9), event_outcome=0, tenant_id=tenant, audit_source_id="node-1",
        active_participants=[ActiveParticipant(user_id="MODALITY", user_is_requestor=True)],
        participant_objects=[ParticipantObject(object_id="1.2.826.0.1.1", id_type=CodedValue(
            code="110180", scheme="DCM", meaning="Study Instance UID"))],
    )


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def kafka(base_settings: Settings) -> KafkaSettings:
    """The shared local broker's client settings (no database needed here)."""
    return base_settings.kafka


@pytest.fixture
def kafka_topics(kafka: KafkaSettings, topics: TopicSettings) -> Iterator[TopicSettings]:
    """The test's own topics, created with 3 partitions and deleted afterwards."""
    create_topics(kafka, topics)
    yield topics
    delete_topics(kafka, topics.all())


@pytest.fixture
def publisher(kafka: KafkaSettings, kafka_topics: TopicSettings) -> Iterator[Publisher]:
    with Publisher(kafka, kafka_topics) as pub:
        yield pub


def pairs(records: list[Record]) -> list[tuple[bytes | None, bytes | None]]:
    return sorted((r.key, r.value) for r in records)




# ---------------------------------------------------------------- topics, keys, payloads


def test_each_message_type_arrives_on_its_topic_with_its_key_and_exact_payload(
    publisher: Publisher, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    events = [store_event(n, series=n % 2) for n in range(4)]
    states = [state(s) for s in range(3)]
    images = [image(s, n) for s in range(2) for n in range(3)]
    audits = [audit("t1"), audit("t2")]
    dlq = [(b"orig-key", b"\xff not json", [("dicomflow.error.class", b"wire-format"), ("dicomflow.source", b"x[0]@1")])]

    results = [
        publisher.send_store_events(events),
        publisher.send_states(states),
        publisher.send_images(images),
        publisher.send_audit(audits),
        publisher.send_raw(kafka_topics.dlq, dlq),
    ]
    assert [r.delivered for r in results] == [8, 3, 6, 2, 1]
    assert all(r.ok for r in results)

    assert pairs(read_all(kafka, kafka_topics.main)) == sorted(
        (series_key(e.tenant_id, e.patient_id, e.study_uid, e.series_uid).encode(), encode(e)) for e in events)
    assert pairs(read_all(kafka, kafka_topics.log)) == sorted((e.trace_id.encode(), encode(e)) for e in events)
    assert pairs(read_all(kafka, kafka_topics.dicom_state)) == sorted(
        (md5_key(s.tenant_id, s.patient_id, s.study_uid, s.series_uid).encode(), encode(s)) for s in states)
    assert pairs(read_all(kafka, kafka_topics.dicom_image)) == sorted(
        (md5_key(i.tenant_id, i.patient_id, i.study_uid, i.series_uid, i.sop_uid).encode(), encode(i)) for i in images)
    assert pairs(read_all(kafka, kafka_topics.audit)) == sorted((a.tenant_id.encode(), encode(a)) for a in audits)
    (dead,) = read_all(kafka, kafka_topics.dlq)
    assert (dead.key, dead.value, list(dead.headers)) == dlq[0]

    # The payload decodes back to the very message that was sent (UTF-8 names included).
    stored_states = [decode(r.value or b"", DicomStateMeta) for r in read_all(kafka, kafka_topics.dicom_state)]
    assert sorted(stored_states, key=lambda s: s.series_uid) == states


def test_ten_thousand_store_events_with_duplicate_keys_are_ten_thousand_messages_in_order(
    publisher: Publisher, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    # 10 series -> 10 distinct storage_queue keys; every event is sent twice -> duplicate trace_ids.
    unique = [store_event(n, series=n % 10) for n in range(5000)]
    events = [e for e in unique for _ in range(2)]

    result = publisher.send_store_events(events)

    assert result.ok and result.delivered == 20_000
    main = read_all(kafka, kafka_topics.main, timeout_s=60)
    receipts = read_all(kafka, kafka_topics.log, timeout_s=60)
    assert len(main) == 10_000 and len(receipts) == 10_000
    assert len({r.key for r in main}) == 10
    assert sorted(r.value or b"" for r in main) == sorted(encode(e) for e in events)
    # One series stays on one partition, in the order it was sent.
    sent: dict[bytes, list[bytes]] = defaultdict(list)
    for e in events:
        sent[e.key().encode()].append(encode(e))
    received: dict[bytes, list[bytes]] = defaultdict(list)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    for r in main:  # read_all sorts by partition, then offset
        assert r.key is not None
        received[r.key].append(r.value or b"")
        partitions[r.key].add(r.partition)
    assert received == sent
    assert all(len(p) == 1 for p in partitions.values())


def test_without_receipt_only_storage_queue_is_written(
    publisher: Publisher, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    result = publisher.send_store_event(store_event(1), with_receipt=False)
    assert result == BatchResult(delivered=1)
    assert len(read_all(kafka, kafka_topics.main)) == 1
    assert read_all(kafka, kafka_topics.log) == []


def test_one_publisher_shared_by_many_threads_reports_each_thread_its_own_outcome(
    publisher: Publisher, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    """The receiver's model: one association thread per sender, all on one producer."""
    per_thread = 150
    results: dict[int, list[BatchResult]] = {}
    sent: dict[int, list[DicomStoreMeta]] = {}

    def worker(t: int) -> None:
        sent[t] = [store_event(n, series=t, tenant=f"tenant-{t}") for n in range(per_thread)]
        results[t] = [publisher.send_store_event(e) for e in sent[t]]

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert all(r == BatchResult(delivered=2) for rs in results.values() for r in rs)
    receipts = read_all(kafka, kafka_topics.log)
    assert sorted(r.key or b"" for r in receipts) == sorted(e.trace_id.encode() for es in sent.values() for e in es)


def test_a_waiting_batch_does_not_linger(kafka: KafkaSettings, kafka_topics: TopicSettings) -> None:
    """A one-event send returns on its acknowledgement, not after linger.ms (the receiver's latency)."""
    lingering = dataclasses.replace(kafka, linger_ms=2000)
    with Publisher(lingering, kafka_topics) as pub:
        pub.send_store_event(store_event(0))  # connection and metadata
        started = time.monotonic()
        results = [pub.send_store_event(store_event(n)) for n in range(1, 4)]
        elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert elapsed < 2.0  # three sends that lingered would take 6 s


# ---------------------------------------------------------------- asyncio


def test_async_sends_are_awaitable_and_arrive(
    publisher: Publisher, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    events = [store_event(n, series=n % 3) for n in range(3000)]

    async def main() -> tuple[BatchResult, ...]:
        return await asyncio.gather(
            publisher.send_store_events_async(events[:1500]),
            publisher.send_store_events_async(events[1500:]),
            publisher.send_audit_async([audit("t1")]),
            publisher.send_states_async([state(1)]),
        )

    results = asyncio.run(main())
    assert [r.delivered for r in results] == [3000, 3000, 1, 1]
    assert sorted(r.value or b"" for r in read_all(kafka, kafka_topics.main)) == sorted(encode(e) for e in events)
    assert len(read_all(kafka, kafka_topics.audit)) == 1


def test_async_send_to_an_unreachable_broker_does_not_block_the_event_loop() -> None:
    kafka = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=3000)
    events = [store_event(n) for n in range(2000)]

    async def main() -> tuple[BatchResult, float, float]:
        ticks: list[float] = []

        async def heartbeat() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        beat = asyncio.create_task(heartbeat())
        started = time.monotonic()
        result = await pub.send_store_events_async(events)
        elapsed = time.monotonic() - started
        beat.cancel()
        return result, elapsed, max(b - a for a, b in itertools.pairwise(ticks))

    with Publisher(kafka, TopicSettings()) as pub:
        result, elapsed, longest_gap = asyncio.run(main())
    assert result.delivered == 0 and len(result.failures) == 4000
    assert elapsed >= 3.0
    # The send waited ~3 s for the message timeout; the loop kept ticking all along.
    assert longest_gap < 1.0


# ---------------------------------------------------------------- backpressure


def test_a_full_local_queue_is_waited_out_not_dropped(kafka: KafkaSettings, kafka_topics: TopicSettings) -> None:
    tiny = dataclasses.replace(kafka, queue_buffering_max_messages=50, linger_ms=1)
    events = [store_event(n, series=n % 7) for n in range(3000)]
    with Publisher(tiny, kafka_topics) as pub:
        blocking = pub.send_store_events(events[:1500], with_receipt=False)
        awaited = asyncio.run(pub.send_store_events_async(events[1500:], with_receipt=False))
    assert blocking == BatchResult(delivered=1500)
    assert awaited == BatchResult(delivered=1500)
    assert sorted(r.value or b"" for r in read_all(kafka, kafka_topics.main)) == sorted(encode(e) for e in events)


# ---------------------------------------------------------------- failures


def test_unreachable_broker_reports_every_message_failed_after_the_message_timeout() -> None:
    kafka = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=1500)
    events = [store_event(n) for n in range(200)]
    with Publisher(kafka, TopicSettings()) as pub:
        result = pub.send_store_events(events)
    assert result.delivered == 0
    assert sorted((f.index, f.topic) for f in result.failures) == sorted(
        (i, t) for i in range(200) for t in ("storage_queue", "log_queue"))
    assert all("_MSG_TIMED_OUT" in f.reason and kafka.brokers in f.reason for f in result.failures)
    assert {f.key for f in result.failures if f.topic == "log_queue"} == {e.trace_id for e in events}
    # how long that takes (not before the message timeout, within 15 s): benchmarks/bench_publisher.py


def test_a_caller_deadline_shorter_than_the_message_timeout_is_honoured() -> None:
    kafka = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=60_000)
    with Publisher(kafka, TopicSettings()) as pub:
        result = pub.send_store_event(store_event(1), timeout_s=0.5)
        pub.close(timeout_s=0.5)
    assert result.delivered == 0 and len(result.failures) == 2
    assert all("within 0.5 s" in f.reason for f in result.failures)  # the caller's deadline ended it, not the 60 s
    # how long that takes (within 5 s): benchmarks/bench_publisher.py


def test_a_queue_that_stays_full_ends_at_the_caller_deadline() -> None:
    """Broker gone, local queue full: the sender stops at its deadline and sends nothing more."""
    kafka = KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=60_000, queue_buffering_max_messages=10)
    with Publisher(kafka, TopicSettings()) as pub:
        result = pub.send_store_events([store_event(n) for n in range(100)], timeout_s=1.0)
        blocked = asyncio.run(pub.send_store_events_async([store_event(n) for n in range(50)], timeout_s=0.5))
        pub.close(timeout_s=0.5)
    assert result.delivered == 0 and len(result.failures) == 200
    reasons = [f.reason for f in result.failures]
    assert sum("still full at the send deadline" in r for r in reasons) == 190  # never queued
    assert sum("within 1.0 s" in r for r in reasons) == 10  # queued, never acknowledged
    # how long that takes (not before the deadline, within 5 s): benchmarks/bench_publisher.py
    assert blocked.delivered == 0 and len(blocked.failures) == 100
    assert all(f.reason.startswith("not sent") for f in blocked.failures)  # the queue was still full


@pytest.mark.slow
# KafkaBroker.start leaves the broker running detached; its Popen handle warns when collected.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <function Popen.__del__:pytest.PytestUnraisableExceptionWarning")
def test_broker_killed_sends_fail_and_only_acknowledged_messages_are_on_the_topic(
    stack: LocalStack, tmp_path: Path
) -> None:
    """A throwaway broker (never the shared one): deliver, SIGKILL it, send, restart, read back."""
    home = tmp_path / "broker"
    home.mkdir()
    (home / "cache").symlink_to(stack.settings.stack.dir.resolve() / "cache")
    broker = KafkaBroker(StackSettings(dir=home, kafka_port=(ports := free_ports(2))[0], kafka_controller_port=ports[1], kafka_heap_mb=256))
    broker.start()
    try:
        kafka = KafkaSettings(brokers=broker.bootstrap, message_timeout_ms=3000)
        topics = dataclasses.replace(TopicSettings(), partitions=2)
        create_topics(kafka, topics)
        before = [store_event(n, series=n % 4) for n in range(500)]
        after = [store_event(n, series=n % 4) for n in range(500, 800)]
        with Publisher(kafka, topics) as pub:
            delivered = pub.send_store_events(before)
            broker.kill()
            failed = pub.send_store_events(after)
            async_failed = asyncio.run(pub.send_audit_async([audit("t1")]))
        assert delivered == BatchResult(delivered=1000)
        assert failed.delivered == 0 and failed.failed_indices() == set(range(300))
        assert async_failed.delivered == 0 and len(async_failed.failures) == 1

        broker.start()
        stored = read_all(kafka, topics.main)
        assert sorted(r.value or b"" for r in stored) == sorted(encode(e) for e in before)
    finally:
        broker.stop()


# ---------------------------------------------------------------- compression

_CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


def _batch_codecs(segment: Path) -> list[int]:
    """Compression codec of every record batch in a Kafka log segment (v2 record batch header)."""
    data = segment.read_bytes()
    codecs, pos = [], 0
    while pos + 23 <= len(data):
        (length,) = struct.unpack_from(">i", data, pos + 8)
        magic = data[pos + 16]
        (attributes,) = struct.unpack_from(">h", data, pos + 21)
        assert magic == 2
        codecs.append(attributes & 0x7)
        pos += 12 + length
    return codecs


@pytest.mark.parametrize("codec", get_args(Compression))
def test_the_configured_codec_is_what_the_broker_stores(
    codec: Compression, stack: LocalStack, kafka: KafkaSettings, kafka_topics: TopicSettings
) -> None:
    kafka = dataclasses.replace(kafka, compression_codec=codec)
    topics = dataclasses.replace(kafka_topics, main=f"{kafka_topics.main}_{codec}", partitions=1)
    create_topics(kafka, topics)
    try:
        with Publisher(kafka, topics) as pub:
            assert pub.config["compression.type"] == codec
            assert pub.send_store_events([store_event(n) for n in range(300)], with_receipt=False).ok
        segments = sorted((stack.kafka.data / f"{topics.main}-0").glob("*.log"))
        codecs = [c for s in segments for c in _batch_codecs(s)]
        assert codecs and set(codecs) == {_CODEC_IDS[codec]}
    finally:
        delete_topics(kafka, [topics.main])
