"""The one ordered step that makes the consumer lose nothing: persist → publish + ack → commit.

:func:`persist_publish_commit` is the whole delivery guarantee in one
function:

1. **persist**: one PostgreSQL transaction with the batch's receipts,
   series states and instances (idempotent upserts);
2. **publish**: series-state events, instance events, dead letters and their
   audit events, each call returning only once Kafka acknowledged every
   message (or raising);
3. **commit**: the batch's offsets, waiting at most ``Sinks.commit_timeout_s``
   for the group coordinator's confirmation (the request is asynchronous, so
   a coordinator outage cannot block the loop; an unconfirmed commit raises a
   transient error and the loop retries the step, which resumes right here).

A crash or an exception anywhere before step 3 leaves the offsets where they
were, so the batch is read again; replaying is harmless because every write
is an upsert and every derived event is keyed. The Rust reference consumer
committed each offset the moment it was read and ignored database errors
(docs/architecture.md, "What the Rust reference services got wrong", 1 and 6).

The step is resumable: :class:`Progress` remembers what already succeeded,
so a retry after a transient fault (PostgreSQL restarting, a broker
unreachable) does not persist or publish the finished parts again.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dicomflow.kafka.delivery import BatchResult
from dicomflow.kafka.dlq import DeadLetter
from dicomflow.kafka.records import TP
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, now
from dicomflow.pipeline.types import ParsedBatch

log = logging.getLogger(__name__)


class BatchStore(Protocol):
    """Where a batch is persisted (``dicomflow.store.PgStore``)."""

    def write_batch(
        self,
        receipts: Sequence[DicomStoreMeta],
        states: Sequence[DicomStateMeta],
        images: Sequence[DicomImageMeta],
    ) -> list[DicomStateMeta]:
        """Upsert everything in ONE transaction; return the persisted state of each touched series."""
        ...


class EventPublisher(Protocol):
    """Where derived events go (``dicomflow.kafka.producer.Publisher``); each call waits for acks."""

    def send_states(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult: ...

    def send_images(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult: ...

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult: ...

    def send_raw(
        self,
        topic: str,
        items: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]],
        timeout_s: float | None = None,
    ) -> BatchResult: ...


class OffsetCommitter(Protocol):
    """Commits exact offsets (``dicomflow.kafka.consumer.KafkaConsumer``)."""

    def commit(self, offsets: Mapping[TP, int], timeout_s: float = 5.0) -> None:
        """Commit, waiting at most ``timeout_s`` for the result (raises a transient ConsumerError after)."""
        ...


@dataclass(frozen=True)
class Sinks:
    """Everything the step writes to, plus what it needs to name its dead letters.

    No defaults: the values come from the settings (through
    :class:`~dicomflow.pipeline.loop.LoopConfig`), whose defaults are the only ones.
    """

    store: BatchStore
    publisher: EventPublisher
    committer: OffsetCommitter
    dlq_topic: str
    node_id: str
    default_tenant: str
    #: Upper bound for one publish call's wait for acknowledgements (None: the producer's own).
    publish_timeout_s: float | None
    #: Upper bound for the wait for an offset commit's confirmation.
    commit_timeout_s: float


@dataclass
class Progress:
    """What already succeeded for one batch, so that a retry resumes where it failed."""

    #: Persisted series states (set once PostgreSQL committed).
    states: list[DicomStateMeta] | None = None
    #: Publish stages acknowledged: "states", "images", "dlq", "audit".
    sent: set[str] = field(default_factory=set)
    #: Dead letter and audit event per poison record (by ``topic[p]@offset``).
    dead_letters: dict[str, tuple[DeadLetter, AuditEvent]] = field(default_factory=dict)
    committed: bool = False
    #: Number of states published, seconds of the PostgreSQL transaction (metrics).
    states_published: int = 0
    store_s: float | None = None
    #: Wall-clock time PostgreSQL committed the batch (latency measurements).
    persisted_at: dt.datetime | None = None


def persist_publish_commit(batch: ParsedBatch, progress: Progress, sinks: Sinks) -> Progress:
    """Persist, publish and acknowledge, then commit the offsets of ``batch``: in this order.

    Raises:
        StoreError: PostgreSQL failed; nothing was published or committed.
        PublishError: Kafka did not acknowledge; the offsets were not committed.
        ConsumerError: the offset commit failed or was not confirmed in time
            (``CommitTimeoutError``); everything before it is done (and
            recorded in ``progress``), so a retry only commits.
    """
    persist(batch, progress, sinks.store)
    publish(batch, progress, sinks)
    sinks.committer.commit(batch.offsets(), timeout_s=sinks.commit_timeout_s)
    progress.committed = True
    return progress


def persist(batch: ParsedBatch, progress: Progress, store: BatchStore) -> None:
    """Step 1: one transaction for the batch's good items (skipped when already done or empty)."""
    if progress.states is not None:
        return
    good = batch.good
    if not good:
        progress.states = []
        progress.persisted_at = now()
        return
    t0 = time.perf_counter()
    progress.states = store.write_batch([g.event for g in good], [g.state for g in good], [g.image for g in good])
    progress.store_s = time.perf_counter() - t0
    progress.persisted_at = now()


def publish(batch: ParsedBatch, progress: Progress, sinks: Sinks) -> None:
    """Step 2: derived events, dead letters and their audit events, each stage acknowledged."""
    good = batch.good
    timeout = sinks.publish_timeout_s
    if "states" not in progress.sent:
        states = _still_owned_states(progress.states or [], batch)
        if states:
            sinks.publisher.send_states(states, timeout_s=timeout).raise_for_failures()
        progress.states_published = len(states)
        progress.sent.add("states")
    if "images" not in progress.sent:
        if good:
            sinks.publisher.send_images([g.image for g in good], timeout_s=timeout).raise_for_failures()
        progress.sent.add("images")
    poison = batch.poison
    for p in poison:  # built once: a retry re-sends the very same dead letters
        if p.record.source not in progress.dead_letters:
            progress.dead_letters[p.record.source] = (
                p.letter(node_id=sinks.node_id),
                p.audit(node_id=sinks.node_id, default_tenant=sinks.default_tenant),
            )
    prepared = [progress.dead_letters[p.record.source] for p in poison]
    if "dlq" not in progress.sent:
        if prepared:
            raw = [letter.as_raw() for letter, _ in prepared]
            sinks.publisher.send_raw(sinks.dlq_topic, raw, timeout_s=timeout).raise_for_failures()
        progress.sent.add("dlq")
    if "audit" not in progress.sent:
        if prepared:
            sinks.publisher.send_audit([audit for _, audit in prepared], timeout_s=timeout).raise_for_failures()
        progress.sent.add("audit")


def _still_owned_states(states: list[DicomStateMeta], batch: ParsedBatch) -> list[DicomStateMeta]:
    """The persisted states of series that still have items in the batch (after a revoke)."""
    wanted = {(g.state.tenant_id, g.state.study_uid, g.state.series_uid) for g in batch.good}
    return [s for s in states if (s.tenant_id, s.study_uid, s.series_uid) in wanted]


__all__ = [
    "BatchStore",
    "EventPublisher",
    "OffsetCommitter",
    "Progress",
    "Sinks",
    "persist",
    "persist_publish_commit",
    "publish",
]
