"""``dicomflow warehouse run``: log/state/image/audit topics → the embedded DuckDB warehouse, exactly once.

One loop, one DuckDB connection, one consumer, one producer (for dead letters):

1. collect a batch (up to ``[warehouse] batch_max_messages`` or
   ``batch_max_ms``) from the four topics;
2. decode each message with msgspec against its table's model; a message
   that does not fit goes to ``<topic>.dlq`` with the reason headers (and an
   audit event), and its offset still counts as consumed;
3. wait for Kafka to acknowledge the dead letters (a failed publish is
   retried with the consumer loops' paused retry, :mod:`dicomflow.kafka.retry`:
   every partition paused, the consumer still polling, nothing written
   meanwhile, and a stop honoured within a poll);
4. build one Arrow table per warehouse table and write them, *with the
   batch's next offsets*, in one DuckDB transaction (:func:`.duck.write_batch`);
5. commit the same offsets to Kafka, for information only (lag tools).

On start and on every assignment the consumer starts each partition at the
offset stored in the DuckDB file (the beginning when there is none), never at
the group's commit: the file is the sink's state. A SIGKILL anywhere loses at
most the uncommitted batch, which is read again: every row lands exactly once.
Dead letters of a batch killed between steps 3 and 4 are sent again (the DLQ
is at-least-once; its headers name the source offset, so duplicates are
recognisable).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb
from confluent_kafka import OFFSET_BEGINNING, Message
from prometheus_client import CollectorRegistry

from dicomflow.audit.dead_letters import dead_letter_audit, message_context
from dicomflow.errors import ConsumerError
from dicomflow.kafka.consumer import KafkaConsumer
from dicomflow.kafka.dlq import DeadLetters, Poison, dead_letter_topic
from dicomflow.kafka.producer import Publisher
from dicomflow.kafka.records import TP
from dicomflow.kafka.retry import PausedRetry
from dicomflow.metrics import Health, MetricsServer, WarehouseMetrics
from dicomflow.settings import Settings
from dicomflow.warehouse.decoding import TableDecoder
from dicomflow.warehouse.duck import WriteResult, open_writer, stored_offsets, write_batch
from dicomflow.warehouse.prepare import Prepared, decode_batch
from dicomflow.warehouse.schema import TABLES, Table
from dicomflow.warehouse.snapshot import Snapshotter

log = logging.getLogger(__name__)

#: Longest one consume call blocks (see :meth:`WarehouseSink._collect`).
_SLICE_S = 0.05


@dataclass
class SinkSummary:
    """What a run did, for the command's last line and for tests."""

    consumed: int = 0
    batches: int = 0
    dead_lettered: int = 0
    retries: int = 0
    rows: dict[str, int] = field(default_factory=lambda: {t.name: 0 for t in TABLES})
    snapshots: int = 0
    last_snapshot_s: float | None = None
    stopped_because: str = ""


def _writer_idle(in_flight: tuple[Prepared, Future[WriteResult]] | None) -> Callable[[], bool]:
    """Whether the writer has no batch of ``in_flight`` left to write (bound now, asked during the poll)."""
    return lambda: in_flight is None or in_flight[1].done()


class WarehouseSink:
    """The sink as an object: :meth:`run` it, :meth:`stop` it from a signal handler or another thread.

    Raises (from :meth:`run`):
        WarehouseLockedError: another writer has the DuckDB file (named in the message).
        WarehouseError: the file cannot be opened.
        ConsumerError: a fatal Kafka client error.
        duckdb.Error: a write failed (nothing of that batch is stored; restart to resume).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        max_messages: int | None = None,
        until_idle_s: float | None = None,
        registry: CollectorRegistry | None = None,
        on_batch: Callable[[SinkSummary], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: the event that ends :meth:`run` (the CLI's signal handlers set it)."""
        self.settings = settings
        self.max_messages = max_messages
        self.until_idle_s = until_idle_s
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = WarehouseMetrics(self.registry)
        self.health = Health()
        self.on_batch = on_batch
        self.summary = SinkSummary()
        self._tables: dict[str, Table] = {getattr(settings.topics, t.topic_attr): t for t in TABLES}
        self._decoders: dict[str, TableDecoder] = {t.name: TableDecoder(t) for t in TABLES}
        #: Records taken into batches (written or in flight): what --max-messages counts.
        self._taken = 0
        self._offsets: dict[TP, int] = {}
        self._pending: list[Message] = []
        self._stop = stop if stop is not None else threading.Event()
        self._retry = PausedRetry(settings.consumer.retry_initial_ms, settings.consumer.retry_max_ms, self._stop)
        self._generation = 0
        self._assigned: set[TP] = set()
        self._last_activity = time.monotonic()

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Finish the batch in hand, commit it, and return from :meth:`run` (signal-handler safe)."""
        self._stop.set()

    # rebalance listener (called inside consume, on this thread)
    def on_assigned(self, partitions: list[TP]) -> None:
        self._assigned.update(partitions)
        self._last_activity = time.monotonic()

    def on_revoked(self, partitions: list[TP]) -> None:
        gone = set(partitions)
        self._assigned.difference_update(gone)
        # Records of a partition we no longer own are not ours to write; the next owner re-reads them.
        self._pending = [m for m in self._pending if (m.topic(), m.partition()) not in gone]

    def _start_offsets(self, partitions: list[TP]) -> dict[TP, int]:
        """Where newly assigned partitions start: the offsets stored with the rows, else the beginning."""
        return {tp: self._offsets.get(tp, OFFSET_BEGINNING) for tp in partitions}

    # ------------------------------------------------------------------ run

    def run(self) -> SinkSummary:
        """Open the file (refusing a second writer), consume until stopped, idle or done, then close."""
        s = self.settings
        con = open_writer(s.warehouse)
        server: MetricsServer | None = None
        consumer: KafkaConsumer | None = None
        publisher: Publisher | None = None
        snapshots = Snapshotter(con, s.warehouse.snapshot_file(), s.warehouse.snapshot_interval_s, self._snapshot_done)
        try:
            self._offsets = stored_offsets(con)
            if s.metrics.port:
                server = MetricsServer(s.metrics.host, s.metrics.port, self.registry, self.health).start()
            publisher = Publisher(s.kafka, s.topics, client_id=f"dicomflow-warehouse-{s.worker_node_id}")
            consumer = KafkaConsumer(
                s.kafka,
                group_id=s.warehouse.group_id,
                session_timeout_ms=s.consumer.session_timeout_ms,
                max_poll_interval_ms=s.consumer.max_poll_interval_ms,
                listener=self,
                client_id=f"dicomflow-warehouse-{s.worker_node_id}",
                start_offsets=self._start_offsets,
            )
            consumer.subscribe(list(self._tables))
            self.health.started()
            self._loop(con, consumer, publisher, snapshots)
        finally:
            self.health.stopped()
            try:
                snapshots.final(self._generation)
                self.summary.snapshots = snapshots.taken
            finally:
                if consumer is not None:
                    consumer.close()
                if publisher is not None:
                    publisher.close()
                con.close()
                if server is not None:
                    server.stop()
        return self.summary

    def _snapshot_done(self, seconds: float) -> None:
        self.metrics.snapshot_seconds.observe(seconds)
        self.metrics.snapshot_time.set(time.time())
        self.summary.last_snapshot_s = seconds

    def _budget(self) -> int:
        cap = self.settings.warehouse.batch_max_messages
        if self.max_messages is not None:
            cap = min(cap, self.max_messages - self._taken)
        return max(0, cap)

    def _why_stop(self) -> str | None:
        if self._stop.is_set():
            return "stopped by signal"
        if self.max_messages is not None and self._taken >= self.max_messages:
            return f"--max-messages {self.max_messages} reached"
        idle = self.until_idle_s
        if idle is not None and self._assigned and time.monotonic() - self._last_activity >= idle:
            return f"idle for {idle:g} s"
        return None

    def _loop(
        self, con: duckdb.DuckDBPyConnection, consumer: KafkaConsumer, publisher: Publisher, snapshots: Snapshotter
    ) -> None:
        """Collect and decode batch N+1 while the writer thread commits batch N.

        DuckDB releases the GIL while it writes, so decoding (Python) and the
        write (DuckDB) use both cores. Only one batch is ever in flight, and
        batch N+1 is handed to the writer only after batch N committed, so
        the file's rows and offsets advance batch by batch, in order.
        """
        window_s = self.settings.warehouse.batch_max_ms / 1000.0
        writer = con.cursor()  # the writer thread's own connection to the same database
        writer.execute("SET preserve_insertion_order = false")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warehouse-write")
        in_flight: tuple[Prepared, Future[WriteResult]] | None = None
        try:
            while True:
                why = self._why_stop()
                if why is not None:
                    self.summary.stopped_because = self.summary.stopped_because or why
                    log.info("warehouse sink stopping: %s", self.summary.stopped_because)
                    break
                self._collect(consumer, window_s, _writer_idle(in_flight))
                self.health.beat()
                prepared = self._take_batch(consumer, publisher)
                if in_flight is not None:
                    done, future = in_flight
                    in_flight = None
                    self._finish(consumer, done, future.result())
                    self._last_activity = time.monotonic()  # time spent writing is not idleness
                if prepared is not None:
                    in_flight = (prepared, pool.submit(self._persist, writer, prepared))
                snapshots.maybe_start(self._generation)
                self.metrics.set_lag(consumer.lag())
            if in_flight is not None:
                done, future = in_flight
                in_flight = None
                self._finish(consumer, done, future.result())
        finally:
            # Never close the connection under a running write: wait for it (its error, if any, is
            # already on its way up, or was raised above).
            if in_flight is not None:
                in_flight[1].exception()
            pool.shutdown(wait=True)
            writer.close()

    def _take_batch(self, consumer: KafkaConsumer, publisher: Publisher) -> Prepared | None:
        """The pending messages as a prepared batch (None: nothing new, or stopped while dead-lettering)."""
        if not self._pending:
            return None
        messages, self._pending = self._pending, []
        prepared = self._prepare(consumer, publisher, messages)
        if prepared is None:
            self.summary.stopped_because = "stopped by signal (batch not written)"
            return None
        if not prepared.records:
            return None
        self._taken += len(prepared.records)
        # Where a partition re-assigned from now on starts: after this batch (which
        # is committed before anything later, or the run ends with its error).
        self._offsets.update(prepared.next_offsets)
        return prepared

    def _collect(self, consumer: KafkaConsumer, window_s: float, writer_idle: Callable[[], bool]) -> None:
        """Fill ``self._pending`` for one batch (it stays empty after a quiet poll).

        A batch ends at ``batch_max_messages``, after ``batch_max_ms``, or as
        soon as nothing more is queued while the writer waits for work: batches
        grow while DuckDB is busy, and neither the window nor librdkafka's
        batch consume (which blocks until it has the whole count or its
        timeout) holds back a batch the writer could take now.
        """
        first_timeout = 0.5
        if self.until_idle_s is not None and self._assigned:
            left = self.until_idle_s - (time.monotonic() - self._last_activity)
            first_timeout = max(0.0, min(first_timeout, left))
        began = time.monotonic()
        started: float | None = None
        polled = False
        while not self._stop.is_set():
            budget = self._budget() - len(self._pending)
            if budget <= 0:
                return
            now = time.monotonic()
            left = (first_timeout - (now - began)) if started is None else (window_s - (now - started))
            if left <= 0 and polled:
                return
            got = self._poll(consumer, budget, min(max(left, 0.0), _SLICE_S))
            polled = True
            if got and started is None:
                started = time.monotonic()
            if started is not None and got < budget and writer_idle():
                return

    def _poll(self, consumer: KafkaConsumer, budget: int, timeout_s: float) -> int:
        """One consume call into ``self._pending`` (partitions held while a dead-letter publish is retried)."""
        got = consumer.consume_messages(budget, timeout_s)
        if got:
            self._last_activity = time.monotonic()
            # A generator: only read when retrying (the hot path pays nothing).
            self._retry.hold_new(consumer, ((m.topic() or "", m.partition() or 0) for m in got))
            self._pending.extend(got)
        return len(got)

    # ------------------------------------------------------------------ one batch

    def _prepare(self, consumer: KafkaConsumer, publisher: Publisher, messages: list[Message]) -> Prepared | None:
        """Decode a batch into Arrow tables and dead-letter what does not fit (acknowledged before returning).

        Returns None when the stop event ended the dead-letter retries: nothing of the batch is
        written, it is read again on the next start.
        """
        prepared = decode_batch(messages, self._offsets, self._tables, self._decoders)
        if prepared.poison and not self._dead_letter(consumer, publisher, prepared.poison):
            return None
        return prepared

    def _persist(self, con: duckdb.DuckDBPyConnection, batch: Prepared) -> WriteResult:
        """The batch's rows and offsets in one DuckDB transaction (runs on the writer thread)."""
        t0 = time.monotonic()
        result = write_batch(con, batch.tables, batch.next_offsets)
        self.metrics.write_seconds.observe(time.monotonic() - t0)
        return result

    def _finish(self, consumer: KafkaConsumer, batch: Prepared, result: WriteResult) -> None:
        """After the commit in DuckDB: account for the batch, then the informational Kafka commit."""
        self._generation += 1
        self._account(batch.records, result.rows, batch.poison, batch.started)
        try:
            consumer.commit_nowait(batch.next_offsets)  # informational: the offsets that count are in the file
        except ConsumerError as exc:
            log.debug("informational Kafka commit failed: %s", exc)

    def _dead_letter(self, consumer: KafkaConsumer, publisher: Publisher, poison: list[Poison]) -> bool:
        """Send the batch's dead letters and their audit events, retried until Kafka acknowledges them.

        Returns False when the stop event ended the retries (nothing acknowledged is lost: the
        batch is read again, its letters sent again).
        """
        node, tenant = self.settings.worker_node_id, self.settings.storage.default_tenant
        letters = DeadLetters()
        for p in poison:
            log.warning("%s: dead-lettered (%s): %s", p.record.source, p.error_class, p.reason)
            letters.add(dead_letter_topic(p.record.topic), p.letter(node_id=node),
                        dead_letter_audit(node_id=node, default_tenant=tenant, source=p.record.source,
                                          error_class=p.error_class, reason=p.reason,
                                          context=message_context(p.record.value)))

        def count_retry(_exc: Exception) -> None:
            self.summary.retries += 1
            self.metrics.retries.inc()

        room = self.settings.warehouse.batch_max_messages
        try:
            done = self._retry.attempt(lambda: letters.publish(publisher), consumer,
                                       lambda timeout: self._poll(consumer, room, timeout),
                                       what="dead letters", on_retry=count_retry)
        finally:
            self._retry.resume(consumer)
        if not done:
            return False
        for p in poison:
            self.metrics.dead_lettered.labels(topic=p.record.topic, error_class=p.error_class).inc()
        self.summary.dead_lettered += len(poison)
        return True

    def _account(self, records: list[Message], rows: Mapping[str, int], poison: list[Poison], started: float) -> None:
        s = self.summary
        s.consumed += len(records)
        s.batches += 1
        for name, n in rows.items():
            s.rows[name] = s.rows.get(name, 0) + n
            self.metrics.rows.labels(table=name).inc(n)
        per_topic: dict[str, int] = defaultdict(int)
        for m in records:
            per_topic[m.topic() or ""] += 1
        for topic, n in per_topic.items():
            self.metrics.consumed.labels(topic=topic).inc(n)
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_seconds.observe(time.monotonic() - started)
        if self.on_batch is not None:
            try:
                self.on_batch(s)
            except Exception:  # an observer must not break the sink
                log.exception("on_batch observer failed")
        log.debug("batch of %d committed (%d dead-lettered)", len(records), len(poison))


__all__ = ["SinkSummary", "WarehouseSink"]
