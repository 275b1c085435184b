"""Loop bookkeeping that needs no broker: what a revoke drops, when the loop ends."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dicomflow.kafka.records import Record
from dicomflow.pipeline.batch import Batch
from dicomflow.pipeline.loop import ConsumerLoop, LoopConfig
from dicomflow.pipeline.parse import Parser
from dicomflow.pipeline.parse_worker import WIRE_FORMAT
from dicomflow.pipeline.types import ParsedBatch, Poison
from dicomflow.settings import Settings


def never(_listener: Any) -> Any:
    raise AssertionError("no consumer in this test")


def make_loop(tmp_path: Path, **config: Any) -> ConsumerLoop:
    settings = dataclasses.replace(Settings(), topics=dataclasses.replace(Settings().topics, main="q", consumer_group_id="g"))
    loop_config = LoopConfig.from_settings(settings, **config)
    return ConsumerLoop(loop_config, never, Parser(tmp_path, 1), store=None, publisher=None)  # type: ignore[arg-type]


def rec(partition: int, offset: int) -> Record:
    return Record("q", partition, offset, None, b"x")


def test_revoke_drops_pending_and_in_flight_records_of_those_partitions_only(tmp_path: Path) -> None:
    loop = make_loop(tmp_path)
    loop._pending.add([rec(0, 10), rec(1, 10), rec(0, 11)])
    inflight = ParsedBatch([Poison(rec(0, 9), WIRE_FORMAT, "x"), Poison(rec(2, 3), WIRE_FORMAT, "x")], 0.0)
    loop._inflight = inflight
    loop._retry.paused = {("q", 0), ("q", 2)}

    loop.on_revoked([("q", 0)])

    assert [(r.partition, r.offset) for r in loop._pending.take().records] == [(1, 10)]
    assert [i.record.partition for i in inflight.items] == [2]
    assert inflight.offsets() == {("q", 2): 4}  # never commits for the revoked partition
    assert loop._retry.paused == {("q", 2)}
    assert loop.summary.dropped_on_revoke == 3


def test_revoke_before_parsing_drops_from_the_raw_batch(tmp_path: Path) -> None:
    loop = make_loop(tmp_path)
    batch = Batch([rec(0, 1), rec(1, 1)])
    loop._inflight = batch
    loop.on_revoked([("q", 1)])
    assert batch.offsets() == {("q", 0): 2}


def test_the_loop_ends_on_stop_on_budget_and_when_idle(tmp_path: Path) -> None:
    loop = make_loop(tmp_path, max_messages=5, until_idle_s=10.0)
    assert loop._should_end() is None
    assert loop._budget() == 5
    loop._pending.add([rec(0, 1), rec(0, 2)])
    assert loop._budget() == 3  # what is pending counts against --max-messages
    loop.summary.committed_records = 5
    assert loop._should_end() is not None and "limit 5" in str(loop._should_end())
    loop.summary.committed_records = 0
    loop._pending.take()
    loop._last_activity -= 11.0
    assert loop._should_end() is None  # no partitions: waiting for the group is not idleness

    class Owner:
        def assignment(self) -> set[tuple[str, int]]:
            return {("q", 0)}

    loop._consumer = Owner()  # type: ignore[assignment]
    loop.on_assigned([("q", 0)])
    loop._last_activity -= 11.0
    assert "idle" in str(loop._should_end())
    loop.stop()
    assert loop._should_end() == "stop requested"


def test_a_record_postgresql_refuses_is_dead_lettered_and_the_rest_committed(tmp_path: Path) -> None:
    from collections.abc import Sequence

    from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
    from dicomflow.pipeline.commit import Sinks
    from dicomflow.pipeline.types import Parsed
    from dicomflow.store import StoreDataError
    from tests.unit.pipeline.test_commit import Recorder, make_parsed

    class Refusing(Recorder):
        def __init__(self, bad_sop: str) -> None:
            super().__init__()
            self.bad_sop = bad_sop

        def write_batch(
            self, receipts: Sequence[DicomStoreMeta], states: Sequence[DicomStateMeta], images: Sequence[DicomImageMeta]
        ) -> list[DicomStateMeta]:
            if any(i.sop_uid == self.bad_sop for i in images):
                raise StoreDataError("numeric field overflow", sqlstate="22003")
            return super().write_batch(receipts, states, images)

    batch = make_parsed(tmp_path)
    good = [i for i in batch.items if isinstance(i, Parsed)]
    store = Refusing(good[1].image.sop_uid)
    loop = make_loop(tmp_path)
    sinks = Sinks(store=store, publisher=store, committer=store, dlq_topic="q.dlq", node_id="n", default_tenant="d",
                  publish_timeout_s=None, commit_timeout_s=5.0)

    loop._commit_with_retries(batch, None, sinks)  # type: ignore[arg-type]

    assert store.committed == [{("q", 0): 11, ("q", 1): 2}]
    assert [i.sop_uid for i in store.images] == [good[0].image.sop_uid, good[2].image.sop_uid]
    reasons = [dict(h or [])["dicomflow.error.class"] for _, _, h in store.dlq]
    assert sorted(reasons) == [b"database-rejected", b"wire-format"]
    assert loop.summary.dead_lettered == 2 and loop.summary.instances == 2


def test_the_reference_batch_settings_reach_the_loop(tmp_path: Path) -> None:
    import json

    from dicomflow.settings import load_settings

    app = tmp_path / "application.json"
    app.write_text(json.dumps({
        "kafka": {"brokers": "k1:9092"},
        "message_queue": {"topic_main": "storage_queue", "consumer_group_id": "wado-consumer"},
        "consumer": {"max_messages_per_batch": 50, "max_time_between_batches_ms": 5000},
    }))
    config = LoopConfig.from_settings(load_settings(app, {}))
    assert (config.batch_max_messages, config.batch_max_ms) == (50, 5000)
    assert (config.topic, config.group_id) == ("storage_queue", "wado-consumer")
    env = {"DICOMFLOW_CONSUMER_BATCH_MAX_MESSAGES": "7", "DICOMFLOW_CONSUMER_BATCH_MAX_MS": "70"}
    config = LoopConfig.from_settings(load_settings(app, env))
    assert (config.batch_max_messages, config.batch_max_ms) == (7, 70)
