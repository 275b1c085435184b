"""Bookkeeping of the consumer loop: what each committed batch did, run totals, metrics.

Observers only: updating metrics may fail without effect (logged); nothing
here decides what is committed.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from dicomflow.kafka.records import TP, Record
from dicomflow.metrics.consumer import ConsumerMetrics
from dicomflow.models import now
from dicomflow.pipeline.commit import Progress
from dicomflow.pipeline.types import ParsedBatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommittedBatch:
    """What one committed batch did (for observers and tests)."""

    records: int
    instances: int
    dead_lettered: int
    #: Series (tenant, study, series) whose state event was published.
    series: frozenset[tuple[str, str, str]]
    offsets: dict[TP, int]
    attempts: int
    committed_at: dt.datetime
    #: When PostgreSQL committed the batch (wall clock, like the events' created_time).
    persisted_at: dt.datetime
    #: created_time of each instance's store event, in batch order.
    created: tuple[dt.datetime, ...]
    #: Monotonic times: the batch window opened, the offsets were committed.
    opened_s: float
    committed_s: float


@dataclass
class RunSummary:
    """Totals of one :meth:`~dicomflow.pipeline.loop.ConsumerLoop.run`."""

    consumed: int = 0
    committed_records: int = 0
    instances: int = 0
    dead_lettered: int = 0
    batches: int = 0
    retries: int = 0
    dropped_on_revoke: int = 0
    abandoned: int = 0
    stopped_because: str = ""
    #: Monotonic time the first record arrived (None before any).
    first_record_s: float | None = None
    batch_log: list[CommittedBatch] = field(default_factory=list)

    def add(self, done: CommittedBatch, *, keep_log: bool) -> None:
        """Count one committed batch (and keep it when ``keep_log``)."""
        self.committed_records += done.records
        self.instances += done.instances
        self.dead_lettered += done.dead_lettered
        self.batches += 1
        if keep_log:
            self.batch_log.append(done)


def committed_batch(parsed: ParsedBatch, progress: Progress, attempts: int) -> CommittedBatch:
    """What ``parsed`` did, once its offsets were committed."""
    at = now()
    good = parsed.good
    return CommittedBatch(
        records=len(parsed.items),
        instances=len(good),
        dead_lettered=len(parsed.poison),
        series=frozenset((g.state.tenant_id, g.state.study_uid, g.state.series_uid) for g in good),
        offsets=parsed.offsets(),
        attempts=attempts,
        committed_at=at,
        persisted_at=progress.persisted_at or at,
        created=tuple(g.event.created_time for g in good),
        opened_s=parsed.started,
        committed_s=time.monotonic(),
    )


def observe(m: ConsumerMetrics, parsed: ParsedBatch, progress: Progress, done: CommittedBatch,
            lag: Callable[[], Mapping[TP, int]] | None) -> None:
    """Update the consumer metrics for one committed batch; a failure is logged, never raised."""
    try:
        m.batches.inc()
        m.batch_size.observe(done.records)
        m.batch_seconds.observe(max(0.0, time.monotonic() - parsed.started))
        m.persisted.inc(done.instances)
        m.published.labels(kind="image").inc(done.instances)
        m.published.labels(kind="state").inc(progress.states_published)
        m.published.labels(kind="audit").inc(done.dead_lettered)
        m.dead_lettered.inc(done.dead_lettered)
        for p in parsed.poison:
            m.failed.labels(error_class=p.error_class).inc()
        if progress.store_s is not None:
            m.store_seconds.observe(progress.store_s)
        m.observe_latencies(done.created, done.persisted_at)
        if lag is not None:
            m.set_lag(lag())
    except Exception:  # metrics are observers
        log.exception("updating metrics failed")


def age_s(record: Record) -> float:
    """Seconds since the producer created ``record`` (its Kafka timestamp); 0 when unknown.

    Opens a batch window when the record was produced rather than when this
    loop got to it, so a record that waited while the previous batch was
    being written does not wait a full window more. The producer's clock may
    differ from ours; the batcher clamps the age to ``[0, max_ms]``.
    """
    if record.timestamp_ms is None:
        return 0.0
    return time.time() - record.timestamp_ms / 1000.0


__all__ = ["CommittedBatch", "RunSummary", "age_s", "committed_batch", "observe"]
