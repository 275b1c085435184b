"""The offsets a group member asked to commit, and what the group coordinator answered.

:class:`~dicomflow.kafka.consumer.KafkaConsumer` commits asynchronously (see
its module docstring): the request goes out, the result comes back through
librdkafka's commit callback. :class:`CommitLedger` is that callback's
record: the latest offset requested per partition, the offsets confirmed,
the errors reported for the latest request, and since when some request is
unconfirmed. It decides nothing about waiting or pausing: the consumer does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, TopicPartition

from dicomflow.errors import ConsumerError
from dicomflow.kafka.group import OWNERSHIP_LOST, OwnershipLostError
from dicomflow.kafka.records import TP

log = logging.getLogger(__name__)


class CommitLedger:
    """Requested, confirmed and refused offset commits of one member, per partition."""

    def __init__(self) -> None:
        #: Offsets the group coordinator confirmed committed (by this member).
        self.committed: dict[TP, int] = {}
        #: The latest offset asked to be committed per partition, and errors reported for it.
        self._requested: dict[TP, int] = {}
        self._errors: dict[TP, tuple[int, KafkaError]] = {}
        #: Monotonic time since which some requested offset is unconfirmed (None: all confirmed).
        self.unconfirmed_since: float | None = None

    def request(self, offsets: Mapping[TP, int]) -> None:
        """Note a commit request of ``offsets`` about to go out (clears earlier errors for them)."""
        for tp, o in offsets.items():
            self._requested[tp] = max(o, self._requested.get(tp, -1))
            self._errors.pop(tp, None)
        if self.unconfirmed_since is None:
            self.unconfirmed_since = time.monotonic()

    def confirmed(self, offsets: Mapping[TP, int]) -> bool:
        return all(self.committed.get(tp, -1) >= o for tp, o in offsets.items())

    def raise_error(self, offsets: Mapping[TP, int]) -> None:
        """Raise the error reported for a request of ``offsets`` that no later success overtook."""
        for tp, o in offsets.items():
            failed = self._errors.get(tp)
            if failed is not None and failed[0] >= o and self.committed.get(tp, -1) < o:
                raise commit_error(failed[1], f"{tp[0]}[{tp[1]}]: {failed[1].str()}")

    def on_result(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """librdkafka's commit callback (served inside consume): record the outcome. Never raises."""
        try:
            for tp in partitions:
                key = (tp.topic, tp.partition)
                error = tp.error or err
                if error is None or error.code() == KafkaError._NO_OFFSET:
                    if tp.offset >= 0:
                        self.committed[key] = max(tp.offset, self.committed.get(key, -1))
                elif tp.offset >= self._requested.get(key, -1):
                    self._errors[key] = (tp.offset, error)
                    log.warning("offset commit of %s[%s]@%s failed: %s", tp.topic, tp.partition, tp.offset, error.str())
            self._update_unconfirmed()
        except Exception:  # never let it unwind through librdkafka
            log.exception("recording an offset commit result failed")

    def forget(self, tps: Iterable[TP]) -> None:
        """Drop what is known of partitions this member no longer owns."""
        for tp in tps:
            self.committed.pop(tp, None)
            self._requested.pop(tp, None)
            self._errors.pop(tp, None)
        self._update_unconfirmed()

    def unconfirmed_s(self) -> float | None:
        """Seconds for which a requested commit has been unconfirmed (None: everything confirmed)."""
        since = self.unconfirmed_since
        return None if since is None else time.monotonic() - since

    def _update_unconfirmed(self) -> None:
        if all(self.committed.get(tp, -1) >= o for tp, o in self._requested.items()):
            self.unconfirmed_since = None


def commit_error(err: object, text: str) -> ConsumerError:
    """The error for a commit that failed with ``err`` (a :class:`KafkaError`, or whatever the client raised)."""
    if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
        return ConsumerError(f"offset commit: nothing to commit ({text})")
    if isinstance(err, KafkaError) and err.code() in OWNERSHIP_LOST:
        return OwnershipLostError(f"offset commit refused, partitions moved to another member: {text}")
    fatal = isinstance(err, KafkaError) and err.fatal()
    return ConsumerError(f"offset commit failed: {text}", fatal=fatal)
