"""The consumer loop: storage_queue → parse → PostgreSQL + derived events → offsets.

One thread does everything that touches the Kafka consumer (polling,
rebalance callbacks, commits), so ownership of partitions can never change
under a batch without the loop seeing it. Parsing runs on a process pool
(:mod:`dicomflow.pipeline.parse`); the ordered persist → publish → commit
step is :func:`dicomflow.pipeline.commit.persist_publish_commit`.

Faults:

- *poison* messages become dead letters inside the batch; their offsets are
  committed with the batch once the DLQ acknowledged them;
- *transient* faults (PostgreSQL down, Kafka not acknowledging, a refused
  commit) retry the *same* batch with the consumer loops' paused retry
  (:mod:`dicomflow.kafka.retry`); nothing past the batch is committed;
- a *revoked or lost* partition's records are dropped from the pending and
  in-flight batches, and its offsets are never committed by this member (the
  new owner replays from the last commit, harmlessly);
- the stop event (set by the SIGTERM/SIGINT handler, or :meth:`ConsumerLoop.stop`)
  is seen within one poll (:data:`~dicomflow.kafka.retry.POLL_MAX_S`): the
  loop finishes the batch in hand, commits, leaves the group and returns; a
  batch stuck in retries is abandoned uncommitted.

Nothing sleeps in fixed steps: every wait is a ``consume`` call bounded by
the time left in the batch window, the backoff delay or the idle limit.

The parts: :mod:`~dicomflow.kafka.retry` (poison or transient, pause and
back off: the consumer toolkit all three loops share),
:mod:`~dicomflow.pipeline.isolate` (finding the records PostgreSQL refuses),
:mod:`~dicomflow.pipeline.stats` (what each batch did, totals, metrics);
this module is the poll loop that drives them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dicomflow.errors import DicomflowError
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.group import RebalanceListener
from dicomflow.kafka.records import TP
from dicomflow.kafka.retry import POLL_MAX_S, PausedRetry, is_transient
from dicomflow.metrics.consumer import ConsumerMetrics
from dicomflow.metrics.health import Health
from dicomflow.pipeline.batch import Batch, Batcher
from dicomflow.pipeline.commit import BatchStore, EventPublisher, Progress, Sinks, persist_publish_commit
from dicomflow.pipeline.isolate import isolate_rejected
from dicomflow.pipeline.parse import Parser
from dicomflow.pipeline.stats import CommittedBatch, RunSummary, age_s, committed_batch, observe
from dicomflow.pipeline.types import ParsedBatch
from dicomflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopConfig:
    """What the loop needs besides its collaborators: :meth:`from_settings`, no defaults of its own."""

    topic: str
    group_id: str
    batch_max_messages: int
    batch_max_ms: int
    retry_initial_ms: int
    retry_max_ms: int
    #: Stop once this many records were committed (None: run until stopped).
    max_messages: int | None
    #: Stop after this many seconds without a record and with nothing in hand (None: never).
    until_idle_s: float | None
    dlq_topic: str
    node_id: str
    default_tenant: str
    #: Upper bound for one publish call's wait for acknowledgements (None: the producer's own).
    publish_timeout_s: float | None
    #: Longest wait for an offset commit's confirmation before the step is retried.
    commit_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings, *, max_messages: int | None = None,
                      until_idle_s: float | None = None) -> LoopConfig:
        """The loop's part of the settings, plus the run's limits (``--max-messages``, ``--until-idle``)."""
        c = settings.consumer
        return cls(
            topic=settings.topics.main,
            group_id=settings.topics.consumer_group_id,
            batch_max_messages=c.batch_max_messages,
            batch_max_ms=c.batch_max_ms,
            retry_initial_ms=c.retry_initial_ms,
            retry_max_ms=c.retry_max_ms,
            max_messages=max_messages,
            until_idle_s=until_idle_s,
            dlq_topic=settings.topics.dlq,
            node_id=settings.worker_node_id,
            default_tenant=settings.storage.default_tenant,
            publish_timeout_s=settings.kafka.message_timeout_ms / 1000.0 + 5.0,
            commit_timeout_s=c.commit_timeout_ms / 1000.0,
        )


class ConsumerLoop:
    """Runs the consumer group member until stopped, idle, or a message budget is spent."""

    def __init__(
        self,
        config: LoopConfig,
        consumer_factory: Callable[[RebalanceListener], KafkaConsumer],
        parser: Parser,
        store: BatchStore,
        publisher: EventPublisher,
        *,
        metrics: ConsumerMetrics | None = None,
        health: Health | None = None,
        on_commit: Callable[[CommittedBatch], None] | None = None,
        keep_batch_log: bool = False,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: the event that ends the run (a signal handler sets it); a new one when not given."""
        self.config = config
        self._consumer_factory = consumer_factory
        self._parser = parser
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._health = health
        self._on_commit = on_commit
        self._keep_log = keep_batch_log
        self._consumer: KafkaConsumer | None = None
        self._stop = stop if stop is not None else threading.Event()
        self._pending = Batcher(config.batch_max_messages, config.batch_max_ms)
        self._inflight: Batch | ParsedBatch | None = None
        self._retry = PausedRetry(config.retry_initial_ms, config.retry_max_ms, self._stop)
        self._last_activity = time.monotonic()
        self.summary = RunSummary()

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return (signal-handler safe)."""
        self._stop.set()

    def assignment(self) -> set[TP]:
        """Partitions owned right now (empty before the group assigned any, or after the run)."""
        consumer = self._consumer
        return consumer.assignment() if consumer is not None else set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    # RebalanceListener -------------------------------------------------

    def on_assigned(self, partitions: list[TP]) -> None:
        """New partitions start from their committed offset; the idle clock starts (again) now."""
        self._last_activity = time.monotonic()

    def _owns_partitions(self) -> bool:
        return bool(self.assignment())

    def on_revoked(self, partitions: list[TP]) -> None:
        """Drop every uncommitted record of these partitions; they are someone else's now."""
        gone = set(partitions)
        self._last_activity = time.monotonic()
        dropped = self._pending.drop_partitions(gone)
        if self._inflight is not None:
            dropped += self._inflight.drop_partitions(gone)
        self._retry.forget(gone)
        if dropped:
            log.info("dropped %s uncommitted record(s) of revoked partitions; their new owner replays them", dropped)
        self.summary.dropped_on_revoke += dropped
        if self._metrics is not None:
            for topic, partition in gone:
                try:
                    self._metrics.lag.remove(topic, str(partition))
                except KeyError:
                    pass

    # ------------------------------------------------------------------ main loop

    def run(self) -> RunSummary:
        """Consume until stopped; returns the totals.

        Raises:
            ConsumerError: a fatal Kafka client error (the process should exit
                non-zero and be restarted).
        """
        consumer = self._consumer = self._consumer_factory(self)
        c = self.config
        sinks = Sinks(
            store=self._store, publisher=self._publisher, committer=consumer, dlq_topic=c.dlq_topic,
            node_id=c.node_id, default_tenant=c.default_tenant, publish_timeout_s=c.publish_timeout_s,
            commit_timeout_s=c.commit_timeout_s,
        )
        consumer.subscribe([self.config.topic])
        if self._health is not None:
            self._health.add_probe("offset-commit", self._commit_probe)
            self._health.started()
        log.info(
            "consuming %s as group %s (batches of %s messages / %s ms)",
            self.config.topic, self.config.group_id, self.config.batch_max_messages, self.config.batch_max_ms,
        )
        try:
            while (reason := self._should_end()) is None:
                batch = self._collect(consumer)
                if batch is not None:
                    self._handle(batch, consumer, sinks)
            self.summary.stopped_because = reason
            log.info("consumer stopping: %s", reason)
        finally:
            if self._health is not None:
                self._health.stopped()
            consumer.close()
        return self.summary

    def _commit_probe(self) -> str | None:
        """Health: an offset commit unconfirmed for longer than its bound (the loop itself still polls)."""
        consumer = self._consumer
        waited = consumer.commit_unconfirmed_s() if consumer is not None else None
        if waited is not None and waited > self.config.commit_timeout_s:
            return f"offset commit unconfirmed for {waited:.0f} s (group coordinator unreachable?); retrying"
        return None

    def _should_end(self) -> str | None:
        if self._stop.is_set():
            return "stop requested"
        limit = self.config.max_messages
        if limit is not None and self.summary.committed_records >= limit:
            return f"{self.summary.committed_records} messages committed (limit {limit})"
        idle = self.config.until_idle_s
        if (
            idle is not None
            and self._owns_partitions()  # waiting for the group to hand out partitions is not idleness
            and len(self._pending) == 0
            and time.monotonic() - self._last_activity >= idle
        ):
            return f"idle for {idle:g} s"
        return None

    def _budget(self) -> int:
        """Records the loop may still take in (the --max-messages limit)."""
        limit = self.config.max_messages
        if limit is None:
            return self.config.batch_max_messages
        return max(0, limit - self.summary.committed_records - len(self._pending))

    def _collect(self, consumer: KafkaConsumer) -> Batch | None:
        """Fill the pending batch until it is full, its window closes, or the loop must end.

        While nothing is pending, wait for *one* record: ``consume(n, t)``
        returns only when ``n`` records are there or ``t`` has passed, so
        asking for a whole batch would open the window late, when the call
        returns. Once the window is open, wait for the rest at most until it
        closes; when it has closed, take what the client already holds
        without waiting, then go.
        """
        pending = self._pending
        while not self._stop.is_set():
            room = min(pending.room(), self._budget())
            if room == 0:
                break
            left = pending.time_left()
            if left is None:
                timeout = POLL_MAX_S
                if self.config.until_idle_s is not None and self._owns_partitions():
                    timeout = min(timeout, self.config.until_idle_s - (time.monotonic() - self._last_activity))
                    if timeout <= 0:
                        return None
                self._poll_into_pending(consumer, 1, timeout)
                if len(pending) == 0:
                    return None
                continue
            self._poll_into_pending(consumer, room, left)
            if left <= 0.0 or pending.ready():
                break
        if len(pending) == 0:
            return None
        return pending.take()

    def _poll_into_pending(self, consumer: KafkaConsumer, room: int, timeout: float) -> int:
        """One consume call; records go to the pending batch (pausing their partitions while retrying)."""
        records = consumer.consume(room, timeout)
        if self._health is not None:
            self._health.beat()
        if self._metrics is not None:
            self._metrics.last_poll.set_to_current_time()
        if not records:
            return 0
        self._last_activity = time.monotonic()
        if self.summary.first_record_s is None:
            self.summary.first_record_s = self._last_activity
        self._retry.hold_new(consumer, (r.tp for r in records))
        self._pending.add(records, age_s=age_s(records[0]))
        self.summary.consumed += len(records)
        if self._metrics is not None:
            self._metrics.consumed.inc(len(records))
        return len(records)

    # ------------------------------------------------------------------ one batch

    def _handle(self, batch: Batch, consumer: KafkaConsumer, sinks: Sinks) -> None:
        """Parse, then persist → publish → commit with retries; never commit past a failure."""
        self._inflight = batch
        try:
            parsed = self._parse_with_retries(batch, consumer)
            if parsed is None:
                return
            self._inflight = parsed
            if self._metrics is not None:
                self._metrics.parse_seconds.observe(parsed.parse_s)
            self._commit_with_retries(parsed, consumer, sinks)
        finally:
            self._inflight = None
            self._retry.resume(consumer)
            # Idle time counts from the end of the last batch: after a long
            # retry the paused partitions must be polled again before "idle".
            self._last_activity = time.monotonic()

    def _parse_with_retries(self, batch: Batch, consumer: KafkaConsumer) -> ParsedBatch | None:
        """Parse; when the storage cannot be read, back off and parse again (None: stop requested)."""
        parsed: list[ParsedBatch] = []

        def step() -> None:  # a StorageReadError (transient) is retried
            parsed.append(self._parser.parse(batch))

        if not self._retry.attempt(step, consumer, self._poll_while_waiting(consumer), what="parse",
                                   on_retry=self._count_retry):
            self._abandon(len(batch.records))
            return None
        return parsed[0]

    def _commit_with_retries(self, parsed: ParsedBatch, consumer: KafkaConsumer, sinks: Sinks) -> None:
        """Persist → publish → commit until it went through; a record PostgreSQL refuses is dead-lettered."""
        progress = Progress()
        attempts = 0

        def step() -> None:
            nonlocal attempts
            if not parsed.items:
                log.info("batch dropped entirely: its partitions were revoked")
                return
            attempts += 1
            t0 = time.perf_counter()
            persist_publish_commit(parsed, progress, sinks)
            self._committed(parsed, progress, attempts, time.perf_counter() - t0)

        def on_poison(exc: DicomflowError) -> bool:
            # PostgreSQL refused a value: find the record(s) and dead-letter them, then go
            # again at once. When no single record is refused, back off like a transient fault.
            progress.states = None  # persist again, without the refused items
            try:
                return isolate_rejected(parsed, sinks.store) > 0
            except DicomflowError as lost:
                if is_transient(lost):  # PostgreSQL went away meanwhile: back off, then the batch again
                    return False
                raise

        if not self._retry.attempt(step, consumer, self._poll_while_waiting(consumer), on_retry=self._count_retry,
                                   on_poison=on_poison):
            self._abandon(len(parsed.items))

    def _abandon(self, records: int) -> None:
        self.summary.abandoned += records
        log.warning("stop requested during retries: %s record(s) left uncommitted, to be replayed", records)

    def _count_retry(self, exc: Exception) -> None:
        self.summary.retries += 1
        if self._metrics is not None:
            self._metrics.retries.labels(fault=type(exc).__name__).inc()

    def _poll_while_waiting(self, consumer: KafkaConsumer) -> Callable[[float], object]:
        """What the retry calls while it backs off: records still go to the pending batch."""
        room = self.config.batch_max_messages
        return lambda timeout: self._poll_into_pending(consumer, room, timeout)

    def _committed(self, parsed: ParsedBatch, progress: Progress, attempts: int, step_s: float) -> None:
        """Book-keeping after a batch's offsets were committed."""
        done = committed_batch(parsed, progress, attempts)
        self.summary.add(done, keep_log=self._keep_log)
        for p in parsed.poison:
            log.warning("%s dead-lettered (%s): %s", p.record.source, p.error_class, p.reason)
        log.debug("batch of %s committed: %s instances, %s dead-lettered, %s attempt(s), %.1f ms",
                  done.records, done.instances, done.dead_lettered, attempts, step_s * 1000)
        if self._metrics is not None:
            consumer = self._consumer
            observe(self._metrics, parsed, progress, done, consumer.lag if consumer is not None else None)
        if self._on_commit is not None:
            try:
                self._on_commit(done)
            except Exception:  # an observer must not break the loop
                log.exception("on_commit observer failed")


__all__ = ["ConsumerLoop", "LoopConfig"]
