"""The ordered step: persist → publish + ack → commit, and what a failure at each stage leaves.

The collaborators here are recording doubles: this is the pure ordering
logic; the integration tests run the same step against Kafka and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from dicomflow.errors import PublishError, StoreError
from dicomflow.extract.header import extract_file
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure
from dicomflow.kafka.records import TP, Record
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, encode
from dicomflow.pipeline.commit import Progress, Sinks, persist_publish_commit
from dicomflow.pipeline.parse_worker import WIRE_FORMAT
from dicomflow.pipeline.types import Parsed, ParsedBatch, Poison


class Recorder:
    """Store, publisher and committer in one, writing what happened to a shared journal."""

    def __init__(self) -> None:
        self.journal: list[str] = []
        self.fail: dict[str, int] = {}
        self.committed: list[dict[TP, int]] = []
        self.images: list[DicomImageMeta] = []
        self.dlq: list[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]] = []

    def _maybe_fail(self, stage: str) -> None:
        if self.fail.get(stage, 0) > 0:
            self.fail[stage] -= 1
            self.journal.append(f"{stage}!")
            raise (StoreError if stage == "persist" else PublishError)(f"{stage} down")

    def _ok(self, stage: str, n: int) -> BatchResult:
        if self.fail.get(stage, 0) > 0:
            self.fail[stage] -= 1
            self.journal.append(f"{stage}!")
            return BatchResult(0, [DeliveryFailure(0, stage, None, "broker down")])
        self.journal.append(stage)
        return BatchResult(n, [])

    def write_batch(
        self, receipts: Sequence[DicomStoreMeta], states: Sequence[DicomStateMeta], images: Sequence[DicomImageMeta]
    ) -> list[DicomStateMeta]:
        self._maybe_fail("persist")
        self.journal.append("persist")
        return list({(s.tenant_id, s.study_uid, s.series_uid): s for s in states}.values())

    def send_states(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        return self._ok("states", len(states))

    def send_images(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        result = self._ok("images", len(images))
        if result.ok:
            self.images.extend(images)
        return result

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        return self._ok("audit", len(events))

    def send_raw(
        self, topic: str, items: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]],
        timeout_s: float | None = None,
    ) -> BatchResult:
        result = self._ok("dlq", len(items))
        if result.ok:
            self.dlq.extend(items)
        return result

    def commit(self, offsets: Mapping[TP, int], timeout_s: float = 5.0) -> None:
        self._maybe_fail("commit")
        self.journal.append("commit")
        self.committed.append(dict(offsets))


def make_parsed(tmp_path: Path) -> ParsedBatch:
    """Three good instances over two partitions and one wire-format poison on partition 0."""
    from dicomflow.corpus import make_corpus

    events = make_corpus(tmp_path, 3, studies=1, series_per_study=2).events
    items: list[Parsed | Poison] = []
    for offset, event in enumerate(events):
        state, image = extract_file(event.file_path, event.tenant_id, received=event.created_time)
        items.append(Parsed(Record("q", offset % 2, offset, b"k", encode(event)), event, state, image))
    items.append(Poison(Record("q", 0, 10, b"k", b"{"), WIRE_FORMAT, "not JSON"))
    return ParsedBatch(items, 0.0)


@pytest.fixture
def parsed(tmp_path: Path) -> ParsedBatch:
    return make_parsed(tmp_path)


def sinks(rec: Recorder) -> Sinks:
    return Sinks(store=rec, publisher=rec, committer=rec, dlq_topic="q.dlq", node_id="n", default_tenant="d",
                 publish_timeout_s=None, commit_timeout_s=5.0)


def test_order_is_persist_then_publish_then_commit(parsed: ParsedBatch) -> None:
    rec = Recorder()
    progress = persist_publish_commit(parsed, Progress(), sinks(rec))
    assert rec.journal == ["persist", "states", "images", "dlq", "audit", "commit"]
    assert rec.committed == [{("q", 0): 11, ("q", 1): 2}]
    assert progress.committed and progress.states_published == 2
    assert len(rec.images) == 3 and len(rec.dlq) == 1


@pytest.mark.parametrize("stage", ["persist", "states", "images", "dlq", "audit", "commit"])
def test_a_failure_commits_nothing_and_the_retry_resumes_where_it_failed(parsed: ParsedBatch, stage: str) -> None:
    rec = Recorder()
    rec.fail[stage] = 1
    progress = Progress()
    with pytest.raises((StoreError, PublishError)):
        persist_publish_commit(parsed, progress, sinks(rec))
    assert rec.committed == []
    assert not progress.committed
    persist_publish_commit(parsed, progress, sinks(rec))
    assert rec.committed == [{("q", 0): 11, ("q", 1): 2}]
    # every stage succeeded exactly once: nothing persisted or published twice
    done = [s for s in rec.journal if not s.endswith("!")]
    assert done == ["persist", "states", "images", "dlq", "audit", "commit"]
    assert len(rec.images) == 3 and len(rec.dlq) == 1


def test_an_all_poison_batch_skips_the_database_but_dead_letters_and_commits(parsed: ParsedBatch) -> None:
    rec = Recorder()
    only_poison = ParsedBatch(parsed.poison, 0.0)
    persist_publish_commit(only_poison, Progress(), sinks(rec))
    assert rec.journal == ["dlq", "audit", "commit"]
    assert rec.committed == [{("q", 0): 11}]


def test_revoked_partitions_are_neither_published_nor_committed_after_a_retry(parsed: ParsedBatch) -> None:
    rec = Recorder()
    rec.fail["images"] = 1
    progress = Progress()
    with pytest.raises(PublishError):
        persist_publish_commit(parsed, progress, sinks(rec))
    parsed.drop_partitions({("q", 0)})
    persist_publish_commit(parsed, progress, sinks(rec))
    assert rec.committed == [{("q", 1): 2}]
    assert [i.sop_uid for i in rec.images] == [p.image.sop_uid for p in parsed.good]
    assert rec.dlq == []  # the poison record was on the revoked partition
