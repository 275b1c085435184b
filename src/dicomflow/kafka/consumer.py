"""A thin typed wrapper around :class:`confluent_kafka.Consumer` for at-least-once work.

Why a wrapper: the consumer loop must never commit an offset by accident, so
the client is built with auto-commit *and* the automatic offset store turned
off, and the only way to commit is :meth:`KafkaConsumer.commit` with the exact
offsets of work already persisted (the Rust reference consumer committed every
message as soon as it was read: docs/architecture.md, "What the Rust reference
services got wrong", 1). Messages come out as plain
:class:`~dicomflow.kafka.records.Record` values, so the pipeline's logic is testable without a broker.

Rebalance callbacks run inside :meth:`KafkaConsumer.consume` on the caller's
thread. The wrapper catches whatever a listener raises (an exception must not
travel through librdkafka's C code) and raises it again after ``consume``
returns.

Offset commits are asynchronous with a bounded wait (:meth:`KafkaConsumer.commit`):
a synchronous commit blocks for as long as the group coordinator is away,
and with it the whole loop (no polls, no health beats, no rebalances
served). The commit request goes out, its result comes back through
librdkafka's commit callback (kept by :class:`~dicomflow.kafka._commits.CommitLedger`),
served by short polls (records that arrive meanwhile are held and handed
out first by the next :meth:`~KafkaConsumer.consume`; past ``_HOLD_MAX`` held
records every owned partition is paused until the result comes). Pausing at
once was measured to cost about half a second per batch: a resumed
partition waits for the fetch request already parked at the broker (up to
``fetch.wait.max.ms``) before it is fetched again. After ``timeout_s`` without a result
the call raises :class:`CommitTimeoutError`, a transient error the loop
retries with backoff while it keeps polling. A later call for the same
offsets returns at once when the earlier request was confirmed meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from dicomflow.errors import ConsumerError
from dicomflow.kafka._auth import AuthWatch
from dicomflow.kafka._commits import CommitLedger, commit_error
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.group import CommitTimeoutError, RebalanceListener, consumer_config
from dicomflow.kafka.records import TP, Record, record_of
from dicomflow.settings import KafkaSettings

log = logging.getLogger(__name__)

#: Seconds of one poll while waiting for a commit result (the wait's granularity): a poll
#: returns only when its timeout has passed or it has its records, not when the result came.
_COMMIT_POLL_S = 0.005
#: Records held (fetched during commit waits, not yet handed out) past which the owned
#: partitions are paused until the commit is confirmed: a bound for a long coordinator outage.
_HOLD_MAX = 10_000


class KafkaConsumer:
    """One group member: subscribe, consume records, commit exact offsets, pause and resume."""

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        group_id: str,
        session_timeout_ms: int = 10000,
        max_poll_interval_ms: int = 300000,
        listener: RebalanceListener | None = None,
        client_id: str = "dicomflow-consumer",
        start_offsets: Callable[[list[TP]], Mapping[TP, int]] | None = None,
    ) -> None:
        """``start_offsets``, when given, says where each newly assigned partition
        starts reading (a sink that keeps its own offsets, e.g. the warehouse's
        DuckDB file); partitions it leaves out start at the group's commit."""
        self._config = consumer_config(
            kafka,
            group_id=group_id,
            session_timeout_ms=session_timeout_ms,
            max_poll_interval_ms=max_poll_interval_ms,
            client_id=client_id,
        )
        self._listener = listener
        self._start_offsets = start_offsets
        self._auth = AuthWatch(kafka.brokers, f"consumer {client_id} of group {group_id}")
        #: Offset commits requested, confirmed and refused (fed by librdkafka's commit callback).
        self._commits = CommitLedger()
        self._consumer = Consumer({**self._config, "error_cb": self._auth, "on_commit": self._commits.on_result},
                                  logger=librdkafka_log)
        self._callback_error: BaseException | None = None
        self._assigned: set[TP] = set()
        #: Partitions paused by the caller (pause / resume), apart from the commit wait's own pause.
        self._paused: set[TP] = set()
        #: Records fetched while waiting for a commit result, handed out by the next consume().
        self._held: list[Message] = []
        self._closed = False

    # ------------------------------------------------------------------ group

    def subscribe(self, topics: Sequence[str]) -> None:
        """Join the group for ``topics``; partitions arrive through the listener."""
        self._consumer.subscribe(
            list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Take the partitions, unpaused, then tell the listener.

        The assignment is made here (not left to the client after the
        callback) so that the partitions can be resumed at once: a partition
        that was paused when it was lost would otherwise come back paused,
        and nothing would ever be fetched from it again.
        """
        tps = [(p.topic, p.partition) for p in partitions]
        try:
            if self._start_offsets is not None and tps:
                starts = self._start_offsets(tps)
                for p in partitions:
                    start = starts.get((p.topic, p.partition))
                    if start is not None:
                        p.offset = start
            consumer.incremental_assign(partitions)
            if partitions:
                consumer.resume(partitions)
        except Exception as exc:  # noqa: BLE001 - never let it unwind through librdkafka
            log.error("taking assigned partitions %s failed: %s", _names(tps), exc)
            if self._callback_error is None:
                self._callback_error = ConsumerError(f"cannot take assigned partitions: {exc}")
            return
        self._assigned.update(tps)
        if tps:
            log.info("assigned %s", _names(tps))
        self._notify("on_assigned", tps)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([(p.topic, p.partition) for p in partitions], "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget([(p.topic, p.partition) for p in partitions], "lost")

    def _forget(self, tps: list[TP], how: str) -> None:
        self._assigned.difference_update(tps)
        self._paused.difference_update(tps)
        gone = set(tps)
        if self._held:
            self._held = [m for m in self._held if (m.topic(), m.partition()) not in gone]
        self._commits.forget(tps)
        if tps:
            log.info("%s %s", how, _names(tps))
        self._notify("on_revoked", tps)

    def _notify(self, method: str, tps: list[TP]) -> None:
        """Call the listener, keeping any exception for the consuming thread."""
        if self._listener is None or not tps:
            return
        try:
            getattr(self._listener, method)(tps)
        except BaseException as exc:  # never let it unwind through librdkafka
            log.exception("rebalance listener %s failed", method)
            if self._callback_error is None:
                self._callback_error = exc

    def assignment(self) -> set[TP]:
        """Partitions this member owns right now."""
        return set(self._assigned)

    # ------------------------------------------------------------------ consuming

    def consume(self, max_messages: int, timeout_s: float) -> list[Record]:
        """Up to ``max_messages`` records, waiting at most ``timeout_s`` for the first.

        Serves rebalance callbacks and keeps the member alive (max.poll.interval)
        as a side effect. Per-message errors that librdkafka recovers from by
        itself (broker down, topic not created yet) are logged and skipped.

        Raises:
            ConsumerError: a fatal client error (``fatal`` set), or the broker refused the
                credentials / its certificate is not trusted (``fatal`` set too: the same
                settings can never work; the message names the broker).
            BaseException: whatever a rebalance listener raised during the call.
        """
        return [record_of(msg) for msg in self.consume_messages(max_messages, timeout_s)]

    def consume_messages(self, max_messages: int, timeout_s: float) -> list[Message]:
        """As :meth:`consume`, but the client's own message objects (no copy into :class:`Record`).

        For a hot loop that reads only a message's topic, partition, offset and
        value (the warehouse sink); :func:`record_of` detaches one when needed.
        """
        if self._held:  # fetched while a commit was waited for: hand them out first, in order
            n = max(1, max_messages)
            out, self._held = self._held[:n], self._held[n:]
            return out
        return self._consume(max_messages, timeout_s)

    def _consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        try:
            messages = self._consumer.consume(num_messages=max(1, max_messages), timeout=max(0.0, timeout_s))
        except KafkaException as exc:
            raise ConsumerError(f"consume failed: {exc}", fatal=_is_fatal(exc)) from exc
        auth = self._auth.failure
        if auth is not None:
            raise ConsumerError(str(auth), fatal=True) from auth
        self._raise_callback_error()
        if not any(msg.error() is not None for msg in messages):
            return messages
        good: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is not None:
                self._on_message_error(msg, err)
                continue
            good.append(msg)
        return good

    def _on_message_error(self, msg: Message, err: KafkaError) -> None:
        if err.fatal():
            raise ConsumerError(f"fatal consumer error: {err.str()}", fatal=True)
        if err.code() == KafkaError._PARTITION_EOF:
            return
        where = f"{msg.topic()}[{msg.partition()}]" if msg.topic() else "consumer"
        log.warning("%s: %s (librdkafka retries by itself)", where, err.str())

    def _raise_callback_error(self) -> None:
        exc, self._callback_error = self._callback_error, None
        if exc is not None:
            raise exc

    # ------------------------------------------------------------------ offsets

    def commit_nowait(self, offsets: Mapping[TP, int]) -> None:
        """Send a commit of these offsets and return at once, consuming nothing meanwhile.

        For a member whose real offsets live elsewhere (the warehouse sink keeps
        them in its DuckDB file): the group's commit only informs lag tools, so
        it needs neither the wait nor the pause-and-hold of :meth:`commit`.

        Raises:
            ConsumerError: the request could not be queued.
        """
        if not offsets:
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            raise ConsumerError(f"commit request failed: {exc}") from exc

    def commit(self, offsets: Mapping[TP, int], timeout_s: float = 5.0) -> None:
        """Commit exactly these offsets (the *next* offset to read); wait at most ``timeout_s`` for the result.

        The request is asynchronous; the wait serves librdkafka's callbacks
        with short polls, holding the records they fetch (see the module
        docstring). Offsets
        already confirmed (by an earlier request that was still in flight
        when its wait ran out) return at once; otherwise a new request goes
        out, so a retry is a retry even if the first request was lost.

        Raises:
            CommitTimeoutError: no result within ``timeout_s`` (coordinator away); retry later.
            OwnershipLostError: the group moved a partition away; drop the work.
            ConsumerError: the commit failed for another reason; retry later.
        """
        if not offsets or self._commits.confirmed(offsets):
            return
        tps = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
        self._commits.request(offsets)
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except KafkaException as exc:
            raise commit_error(exc.args[0] if exc.args else None, str(exc)) from exc
        deadline = time.monotonic() + max(0.0, timeout_s)
        paused: list[TopicPartition] = []
        try:
            while True:
                self._commits.raise_error(offsets)
                if self._commits.confirmed(offsets):
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    waited = time.monotonic() - (self._commits.unconfirmed_since or deadline)
                    raise CommitTimeoutError(
                        f"offset commit of {_names(offsets)} not confirmed within {timeout_s:g} s "
                        f"(unconfirmed for {waited:.0f} s; group coordinator unreachable?); will retry")
                if not paused and len(self._held) >= _HOLD_MAX:
                    paused = [TopicPartition(t, p) for t, p in self._assigned - self._paused]
                    if paused:
                        self._consumer.pause(paused)
                self._held.extend(self._consume(1000, min(left, _COMMIT_POLL_S)))
        finally:
            if paused:
                live = [tp for tp in paused if (tp.topic, tp.partition) in self._assigned]
                if live:
                    self._consumer.resume(live)

    def commit_unconfirmed_s(self) -> float | None:
        """Seconds for which a requested commit has been unconfirmed (None: everything confirmed)."""
        return self._commits.unconfirmed_s()

    def committed(self, partitions: Iterable[TP], timeout_s: float = 10.0) -> dict[TP, int]:
        """The group's committed offsets for ``partitions`` (-1001 when none), read from the broker."""
        tps = [TopicPartition(t, p) for t, p in partitions]
        try:
            result = self._consumer.committed(tps, timeout=timeout_s)
        except KafkaException as exc:
            raise ConsumerError(f"cannot read committed offsets: {exc}") from exc
        return {(tp.topic, tp.partition): tp.offset for tp in result}

    # ------------------------------------------------------------------ flow control

    def pause(self, partitions: Iterable[TP]) -> None:
        """Stop fetching these partitions; records not yet returned are fetched again on resume."""
        tps = [TopicPartition(t, p) for t, p in partitions if (t, p) in self._assigned]
        if tps:
            self._consumer.pause(tps)
            self._paused.update((tp.topic, tp.partition) for tp in tps)

    def resume(self, partitions: Iterable[TP]) -> None:
        """Fetch these partitions again, from the position after the last record returned."""
        tps = [TopicPartition(t, p) for t, p in partitions if (t, p) in self._assigned]
        if tps:
            self._consumer.resume(tps)
            self._paused.difference_update((tp.topic, tp.partition) for tp in tps)

    def lag(self) -> dict[TP, int]:
        """Records behind the log end per owned partition, from cached watermarks (no broker call).

        Measured from the last offset this member committed, else from the
        fetch position; partitions with no fetch yet are left out.
        """
        out: dict[TP, int] = {}
        owned = sorted(self._assigned)
        if not owned:
            return out
        positions = {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.position([TopicPartition(t, p) for t, p in owned])
        }
        for tp in owned:
            try:
                _low, high = self._consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
            except KafkaException:
                continue
            base = self._commits.committed.get(tp, positions.get(tp, -1))
            if high >= 0 and base >= 0:
                out[tp] = max(0, high - base)
        return out

    def close(self) -> None:
        """Leave the group (partitions are handed over at once) and free the client."""
        if self._closed:
            return
        self._closed = True
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:
            log.warning("closing the consumer: %s", exc)


def _is_fatal(exc: KafkaException) -> bool:
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.fatal()


def _names(tps: Iterable[TP]) -> str:
    return ", ".join(f"{t}[{p}]" for t, p in sorted(tps))


__all__ = ["KafkaConsumer"]
