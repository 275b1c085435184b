"""A transactional producer: several messages to several topics, all visible or none.

Used where "published once" must survive a crash between two sends: the
dead-letter re-drive writes the re-driven message, its ledger entry and its
audit event in one Kafka transaction (:mod:`dicomflow.dlq.redrive`), so a
reader with ``isolation.level=read_committed`` sees all three or nothing.

One ``transactional.id`` names one logical writer. ``init_transactions``
(in :meth:`TransactionalSender.open`) completes or aborts whatever a
previous holder of the same id left open and *fences* it: a second writer
with the same id makes the first one's next commit fail. That is what lets
the re-drive read its ledger after ``open`` and trust it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from dicomflow.errors import PublishError
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.config import producer_config
from dicomflow.kafka.exceptions import kafka_error_text
from dicomflow.settings import KafkaSettings

log = logging.getLogger(__name__)

#: (topic, key, value, headers) of one message of a transaction.
TxMessage = tuple[str, bytes | str | None, bytes, list[tuple[str, str | bytes | None]] | None]


class TransactionError(PublishError):
    """A Kafka transaction could not be opened or committed; nothing of it is visible."""


class TransactionalSender:
    """One transactional producer (``transactional.id`` given), for short, whole batches."""

    def __init__(self, kafka: KafkaSettings, transactional_id: str, *, timeout_s: float = 30.0) -> None:
        config: dict[str, Any] = {
            **producer_config(kafka, client_id="dicomflow-tx"),
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 60000,
            "logger": librdkafka_log,
        }
        self._kafka = kafka
        self._id = transactional_id
        self._timeout_s = timeout_s
        self._producer = Producer(config)
        self._failures: list[str] = []

    def open(self) -> None:
        """Register the transactional id with the cluster, fencing any earlier holder.

        Raises:
            TransactionError: the brokers did not answer or refused.
        """
        try:
            self._producer.init_transactions(self._timeout_s)
        except KafkaException as exc:
            raise TransactionError(f"cannot start Kafka transactions as {self._id} on {self._kafka.brokers}: "
                                   f"{kafka_error_text(exc)}") from exc

    def send(self, messages: Sequence[TxMessage]) -> None:
        """Produce every message in one transaction and commit it; on any failure abort it.

        Raises:
            TransactionError: something was not delivered or the commit failed;
                the transaction was aborted, so none of ``messages`` is visible
                to read-committed readers.
        """
        if not messages:
            return
        self._failures = []
        try:
            self._producer.begin_transaction()
            for topic, key, value, headers in messages:
                while True:
                    try:
                        self._producer.produce(topic, value, key, headers=headers, on_delivery=self._on_delivery)
                        break
                    except BufferError:
                        self._producer.poll(0.05)
            self._producer.flush(self._timeout_s)
            if self._failures:
                raise TransactionError(f"{len(self._failures)} message(s) not delivered: {self._failures[0]}")
            self._producer.commit_transaction(self._timeout_s)
        except (KafkaException, TransactionError) as exc:
            try:
                self._producer.abort_transaction(self._timeout_s)
            except KafkaException as abort_exc:
                log.warning("aborting the transaction of %s: %s", self._id, kafka_error_text(abort_exc))
            if isinstance(exc, TransactionError):
                raise
            raise TransactionError(f"Kafka transaction of {self._id} on {self._kafka.brokers} failed: {kafka_error_text(exc)}") from exc

    def _on_delivery(self, err: KafkaError | None, msg: object) -> None:
        if err is not None:
            self._failures.append(f"{err.str()} ({err.name()})")

    def close(self) -> None:
        self._producer.flush(5.0)


__all__ = ["TransactionError", "TransactionalSender", "TxMessage"]
