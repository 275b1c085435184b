"""What a member of a consumer group is configured with, is told, and raises.

The configuration commits only what it is told to (auto-commit and the
automatic offset store off, set last so no pass-through can turn them on);
:class:`~dicomflow.kafka.consumer.KafkaConsumer` is the member itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaError

from dicomflow.errors import ConsumerError
from dicomflow.kafka.config import client_config
from dicomflow.kafka.records import TP
from dicomflow.settings import KafkaSettings

#: Commit errors that mean "this member no longer owns the partition" (a
#: rebalance happened): the new owner replays from the last commit, so the
#: right reaction is to drop the work, not to retry the commit forever.
OWNERSHIP_LOST = frozenset(
    {
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class RebalanceListener(Protocol):
    """Told about partition ownership changes, on the consuming thread."""

    def on_assigned(self, partitions: list[TP]) -> None:
        """Partitions now owned by this member (consumption starts at the committed offset)."""

    def on_revoked(self, partitions: list[TP]) -> None:
        """Partitions no longer owned (revoked or lost): drop their uncommitted work."""


class OwnershipLostError(ConsumerError):
    """A commit was refused because the group moved the partitions elsewhere."""


class CommitTimeoutError(ConsumerError):
    """The group coordinator did not confirm an offset commit within the bound; retry it later.

    Nothing was lost: the offsets may still be committed by the request in
    flight (a later :meth:`KafkaConsumer.commit` of the same offsets then
    returns at once), or the batch is replayed from the last commit.
    """


def consumer_config(
    kafka: KafkaSettings,
    *,
    group_id: str,
    session_timeout_ms: int,
    max_poll_interval_ms: int,
    client_id: str = "dicomflow-consumer",
) -> dict[str, Any]:
    """librdkafka properties for a consumer that commits only what it is told to.

    ``kafka.client`` (SASL/SSL ...) passes through and may tune the others;
    the commit-related properties are set last so that no pass-through can
    turn auto-commit on.
    """
    config = client_config(kafka, client_id=client_id)
    tuned: dict[str, Any] = {
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        "session.timeout.ms": session_timeout_ms,
        "max.poll.interval.ms": max_poll_interval_ms,
        # Incremental rebalancing: a member joining or leaving moves only the
        # partitions that must move; the others keep their in-flight batches.
        "partition.assignment.strategy": "cooperative-sticky",
    }
    config = {**tuned, **config}
    config.update(
        {
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    )
    return config


__all__ = ["CommitTimeoutError", "OwnershipLostError", "RebalanceListener", "consumer_config"]
