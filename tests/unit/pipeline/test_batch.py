"""Batching by count and time, order within a partition, offsets to commit, backoff."""

from __future__ import annotations

import pytest

from dicomflow.kafka.records import Record
from dicomflow.pipeline.batch import Batch, Batcher, next_offsets


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rec(partition: int, offset: int, topic: str = "storage_queue") -> Record:
    return Record(topic, partition, offset, b"k", f"{partition}:{offset}".encode())


def test_batch_is_ready_when_full_by_count() -> None:
    clock = Clock()
    b = Batcher(3, 500, clock)
    b.add([rec(0, 0), rec(0, 1)])
    assert not b.ready()
    assert b.room() == 1
    b.add([rec(0, 2)])
    assert b.ready()
    assert b.room() == 0


def test_batch_is_ready_when_the_window_closes() -> None:
    clock = Clock()
    b = Batcher(500, 500, clock)
    assert b.time_left() is None  # an empty batcher has no window
    b.add([rec(0, 0)])
    clock.t += 0.2
    assert b.time_left() == pytest.approx(0.3)
    assert not b.ready()
    clock.t += 0.3
    assert b.time_left() == 0.0
    assert b.ready()


def test_window_starts_with_the_first_record_not_at_creation() -> None:
    clock = Clock()
    b = Batcher(500, 500, clock)
    clock.t += 10.0  # idle for a long time
    b.add([rec(0, 0)])
    assert b.time_left() == pytest.approx(0.5)
    assert not b.ready()


def test_take_keeps_arrival_order_and_leaves_the_rest_in_order() -> None:
    clock = Clock()
    b = Batcher(4, 500, clock)
    arrivals = [rec(0, 0), rec(1, 0), rec(0, 1), rec(1, 1), rec(0, 2), rec(1, 2)]
    b.add(arrivals)
    clock.t += 0.1
    first = b.take()
    assert first.records == arrivals[:4]
    assert len(b) == 2
    # left-overs keep the window they arrived in
    clock.t += 0.5
    assert b.ready()
    second = b.take()
    assert second.records == arrivals[4:]
    assert len(b) == 0 and b.time_left() is None


def test_order_within_each_partition_is_kept_across_batches() -> None:
    clock = Clock()
    b = Batcher(5, 500, clock)
    arrivals = [rec(p, o) for o in range(10) for p in range(3)]
    b.add(arrivals)
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    while len(b):
        for r in b.take().records:
            seen[r.partition].append(r.offset)
    assert seen == {p: list(range(10)) for p in range(3)}


def test_offsets_to_commit_are_last_offset_plus_one_per_partition() -> None:
    records = [rec(0, 5), rec(1, 7), rec(0, 6), rec(0, 7), rec(1, 8), rec(2, 0, topic="other")]
    assert next_offsets(records) == {("storage_queue", 0): 8, ("storage_queue", 1): 9, ("other", 2): 1}
    assert Batch(records).offsets() == next_offsets(records)


def test_dropping_revoked_partitions_removes_their_records_and_offsets() -> None:
    clock = Clock()
    b = Batcher(10, 500, clock)
    b.add([rec(0, 0), rec(1, 0), rec(0, 1), rec(2, 0)])
    assert b.drop_partitions({("storage_queue", 0)}) == 2
    batch = b.take()
    assert [r.partition for r in batch.records] == [1, 2]
    assert batch.drop_partitions({("storage_queue", 1)}) == 1
    assert batch.offsets() == {("storage_queue", 2): 1}
    assert batch.partitions() == {("storage_queue", 2)}


def test_dropping_everything_closes_the_window() -> None:
    clock = Clock()
    b = Batcher(10, 500, clock)
    b.add([rec(0, 0)])
    b.drop_partitions({("storage_queue", 0)})
    assert len(b) == 0 and b.time_left() is None and not b.ready()


def test_batcher_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        Batcher(0, 500)
    with pytest.raises(ValueError):
        Batcher(10, 0)


def test_window_opens_when_the_first_record_was_produced() -> None:
    clock = Clock()
    b = Batcher(500, 500, clock)
    b.add([rec(0, 0)], age_s=0.3)  # it waited 300 ms while the previous batch was written
    assert b.time_left() == pytest.approx(0.2)


def test_record_age_is_clamped_so_a_skewed_clock_cannot_stretch_or_invert_the_window() -> None:
    clock = Clock()
    ahead = Batcher(500, 500, clock)
    ahead.add([rec(0, 0)], age_s=-30.0)  # producer clock ahead of ours
    assert ahead.time_left() == pytest.approx(0.5)
    behind = Batcher(500, 500, clock)
    behind.add([rec(0, 0)], age_s=3600.0)  # producer clock an hour behind, or a backlog
    assert behind.time_left() == 0.0 and behind.ready()
