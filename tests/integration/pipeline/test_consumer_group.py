"""Two ``dicomflow consume`` processes in one group over a multi-partition topic: exact counts."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from dicomflow.settings import Settings
from tests.integration.consumer_support import (
    committed_total,
    corpus,
    counts,
    expected_counts,
    key_counts,
    pipeline,
    publish,
    series_instance_counts,
    start_consume,
    topic,
    wait_for,
)

__all__ = ["pipeline"]


def _totals(log: str) -> tuple[int, int]:
    """(consumed, committed) of a member's closing summary."""
    found = re.search(r"consumed (\d+), committed (\d+)", log)
    assert found, log[-3000:]
    return int(found.group(1)), int(found.group(2))


def test_two_consumers_in_one_group_share_the_partitions_and_write_exact_counts(pipeline: Settings, tmp_path: Path) -> None:
    assert pipeline.topics.partitions >= 2
    pipeline = dataclasses.replace(pipeline, consumer=dataclasses.replace(pipeline.consumer, batch_max_messages=10))
    c = corpus(pipeline, 2000, studies=8, series_per_study=5)
    logs = [tmp_path / "consumer-a.log", tmp_path / "consumer-b.log"]
    procs = [start_consume(pipeline, logs[0], "--until-idle", "8")]
    try:
        # b joins while a is busy (small batches keep it busy for a while):
        # partitions move mid-stream, a drops what it had not committed. The
        # events published after b's assignment come from every series, so every
        # partition (b's too) gets some of them however fast a drained the first part.
        first = [e for i, e in enumerate(c.events) if i % 4 != 3]
        later = [e for i, e in enumerate(c.events) if i % 4 == 3]
        publish(pipeline, first)
        wait_for("a consuming", lambda: counts(pipeline.database)["dicom_image_meta"] > 0, 60, every_s=0.02)
        procs.append(start_consume(pipeline, logs[1], "--until-idle", "8"))
        wait_for("consumer b assigned", lambda: "assigned" in logs[1].read_text(), 60)
        publish(pipeline, later)
        codes = [p.wait(300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], texts

    assert counts(pipeline.database) == expected_counts(c)
    assert series_instance_counts(pipeline.database) == {s.series_uid: s.instances for s in c.series}
    assert committed_total(pipeline) == 2000
    totals = [_totals(t) for t in texts]
    assert all(committed > 0 for _, committed in totals), totals  # both members did part of the work
    # A rebalance may replay a batch, never lose one. (A batch revoked while its offset commit was in
    # flight is not counted as committed by its old owner, though the commit may have landed; its
    # rows are in PostgreSQL either way, as the counts above show.)
    assert sum(consumed for consumed, _ in totals) >= 2000, totals
    images = topic(pipeline, pipeline.topics.dicom_image)
    assert len(key_counts(images)) == 2000
