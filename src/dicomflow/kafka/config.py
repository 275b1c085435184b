"""librdkafka configuration, built in one place from :class:`KafkaSettings`.

Why one place: the Rust reference producer assembled its config inline (and
built a new producer per batch, see docs/architecture.md); here every client (producer, admin, test reader)
takes the same bootstrap servers and the same security pass-through, and the
producer's delivery guarantees are asserted once, where a test can see them.
"""

from __future__ import annotations

from typing import Any

from dicomflow.errors import ConfigError
from dicomflow.settings import KafkaSettings

#: Producer properties that carry the delivery guarantee (docs/architecture.md): the
#: receiver answers C-STORE Success only after an acks=all acknowledgement of
#: an idempotent producer. ``kafka.client`` may not weaken them.
_GUARANTEES: dict[str, tuple[str, ...]] = {
    "acks": ("all", "-1"),
    "request.required.acks": ("all", "-1"),
    "enable.idempotence": ("true",),
}


def settings_for(kafka: KafkaSettings | str) -> KafkaSettings:
    """``kafka`` itself, or plain settings for a bootstrap address (tests and tools pass one)."""
    return kafka if isinstance(kafka, KafkaSettings) else KafkaSettings(brokers=kafka)


def client_config(kafka: KafkaSettings, *, client_id: str = "dicomflow") -> dict[str, Any]:
    """Properties every client shares: bootstrap servers, client id, and ``kafka.client``.

    ``kafka.client`` is passed through verbatim (``security.protocol``,
    ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
    ``ssl.ca.location`` ...), so any deployment's SASL/SSL setup works without
    dicomflow knowing each property. librdkafka rejects unknown names when the
    client is created.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": kafka.brokers,
        "client.id": client_id,
    }
    config.update(kafka.client)
    return config


def producer_config(kafka: KafkaSettings, *, client_id: str = "dicomflow-producer") -> dict[str, Any]:
    """The producer's librdkafka properties: idempotent, acks=all, batching and compression from the settings.

    Retries: the idempotent producer retries a failed request without
    reordering or duplicating, as often as ``message.timeout.ms`` allows (one
    deadline per message rather than a retry count: the Rust reference producer's
    ``retries=5`` gave up after a fixed number of attempts however short),
    waiting ``retry.backoff.ms`` doubling up to ``retry.backoff.max.ms``.

    Raises:
        ConfigError: ``kafka.client`` tries to turn off acks=all or idempotence.
    """
    config = client_config(kafka, client_id=client_id)
    tuned: dict[str, Any] = {
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": kafka.compression_codec,
        "linger.ms": kafka.linger_ms,
        "batch.num.messages": kafka.batch_num_messages,
        "batch.size": kafka.batch_size,
        "queue.buffering.max.messages": kafka.queue_buffering_max_messages,
        "queue.buffering.max.kbytes": kafka.queue_buffering_max_kbytes,
        "message.timeout.ms": kafka.message_timeout_ms,
        "request.timeout.ms": kafka.request_timeout_ms,
        "retry.backoff.ms": kafka.retry_backoff_ms,
        "retry.backoff.max.ms": max(kafka.retry_backoff_max_ms, kafka.retry_backoff_ms),
    }
    # Settings win over nothing; kafka.client wins over the settings (explicit
    # operator intent), except where it would break the delivery guarantee.
    config = {**tuned, **config}
    for key, allowed in _GUARANTEES.items():
        if key in kafka.client and str(kafka.client[key]).lower() not in allowed:
            raise ConfigError(
                f"kafka.client.{key}", "settings",
                f"must be {' or '.join(allowed)}: dicomflow acknowledges an instance only "
                "after an acks=all write of an idempotent producer",
            )
    return config


def redacted(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a client config safe to log: passwords and secrets replaced by ``***``."""
    secret_words = ("password", "secret", "token")
    return {k: ("***" if any(w in k.lower() for w in secret_words) and v else v) for k, v in config.items()}


__all__ = ["client_config", "producer_config", "redacted"]
