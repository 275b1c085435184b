"""Errors of the Kafka stage: all of them :class:`~dicomflow.errors.PublishError`.

They are transient (``poison`` is False): a broker that is unreachable now may
be back in a minute, so the caller retries and commits nothing past them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from confluent_kafka import KafkaError

from dicomflow.errors import PublishError


class FailedMessage(Protocol):
    """What a :class:`DeliveryError` says of each message it carries.

    :class:`dicomflow.kafka.delivery.DeliveryFailure` is the implementation;
    a protocol here keeps this module free of imports from the rest of the
    Kafka stage (the delivery module raises these errors, so it cannot be
    imported back).
    """

    @property
    def index(self) -> int: ...
    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def reason(self) -> str: ...


class DeliveryError(PublishError):
    """Some messages of a batch were not acknowledged by Kafka.

    ``failures`` lists every one of them (index in the batch, topic, key,
    reason); the message names the first few so a log line is useful alone.
    """

    def __init__(self, failures: Sequence[FailedMessage], delivered: int) -> None:
        self.failures = list(failures)
        self.delivered = delivered
        shown = "; ".join(f"#{f.index} {f.topic} key={f.key}: {f.reason}" for f in self.failures[:3])
        more = f" (+{len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(f"{len(self.failures)} message(s) not delivered, {delivered} delivered: {shown}{more}")


class PublisherClosedError(PublishError):
    """A send was attempted after :meth:`~dicomflow.kafka.producer.Publisher.close`; nothing was sent."""


class TopicAdminError(PublishError):
    """Topics could not be created or described (broker unreachable, not authorized, bad config)."""


class KafkaAuthError(PublishError):
    """A broker refused this client's credentials, or the client did not trust the broker's certificate.

    Not a broker that is down: retrying with the same settings cannot help.
    The message names the broker (as librdkafka does: ``sasl_ssl://host:port/id``),
    the bootstrap servers and the ``kafka.client`` settings to check.
    """

    def __init__(self, brokers: str, reason: str, *, client: str = "Kafka client") -> None:
        self.brokers = brokers
        self.reason = reason
        hint = ("check kafka.client sasl.username / sasl.password" if "SASL" in reason or "uthenticat" in reason
                else "check kafka.client ssl.ca.location (the CA that signed the broker's certificate)")
        super().__init__(f"{client}: Kafka at {brokers} refused the connection: {reason}; {hint}")


__all__ = ["DeliveryError", "FailedMessage", "KafkaAuthError", "PublisherClosedError", "TopicAdminError"]


def kafka_error_text(exc: BaseException) -> str:
    """A librdkafka error as ``reason (NAME)``; any other exception as its text."""
    err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
    return f"{err.str()} ({err.name()})" if err is not None else str(exc)
