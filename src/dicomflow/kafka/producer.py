"""The publisher: one idempotent producer per process, built from the settings.

Every dicomflow message type goes to its topic with its key (see
:mod:`dicomflow.kafka.routing`). Unlike the Rust reference ``KafkaMessagePublisher``
(docs/architecture.md, "What the Rust reference services got wrong", 2, 4, 9):

* one producer lives as long as the :class:`Publisher` (the reference built one
  per batch), and nothing flushes it after each message (the reference did,
  which capped it at one broker round trip per message);
* a batch is sent as it is given: nothing is collected into a map by key, so
  two messages with the same key are two messages (the reference's HashMap
  silently kept only the last one);
* every message's outcome is reported: a batch call returns a
  :class:`~dicomflow.kafka.delivery.BatchResult` with the delivered count and
  one :class:`~dicomflow.kafka.delivery.DeliveryFailure` (index, topic, key,
  reason) per message Kafka did not acknowledge. Nothing is counted
  delivered without an acks=all acknowledgement.

The parts: :mod:`~dicomflow.kafka.routing` (topic and key per message type),
:mod:`~dicomflow.kafka.delivery` (which message was acknowledged),
:mod:`~dicomflow.kafka.engine` (the producer, its poll thread, the send loop
and backpressure) and :mod:`~dicomflow.kafka.aio` (the same engine, awaited).
One publisher is safe to share between threads (the receiver's association
threads) and event loops.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from dicomflow.kafka.aio import send_async
from dicomflow.kafka.delivery import BatchResult, Segment
from dicomflow.kafka.engine import SendEngine
from dicomflow.kafka.routing import RawMessage, model_segments, raw_segments, store_segments
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import KafkaSettings, TopicSettings


class Publisher:
    """Sends every dicomflow message type to its topic with its key.

    Build one per process and share it; :meth:`close` it at shutdown (or use
    it as a context manager) so queued messages are flushed.

    Raises:
        ConfigError: (from the constructor) librdkafka rejects a property, or
            ``kafka.client`` tries to turn off acks=all or idempotence.
    """

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings, *, client_id: str = "dicomflow-producer") -> None:
        self._topics = topics
        self._engine = SendEngine(kafka, client_id=client_id)

    # ------------------------------------------------------------ introspection

    @property
    def config(self) -> dict[str, Any]:
        """The librdkafka properties the producer was created with (a copy)."""
        return self._engine.config

    @property
    def topics(self) -> TopicSettings:
        return self._topics

    # ------------------------------------------------------------ blocking API
    # Each returns when every message is acknowledged or failed, or when
    # timeout_s passes (then the unacknowledged ones are reported failed).

    def send_store_events(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True,
                          timeout_s: float | None = None) -> BatchResult:
        """storage_queue (key: series key) and, with_receipt, log_queue (key: trace_id)."""
        return self._engine.send(self._store(events, with_receipt), timeout_s)

    def send_store_event(self, event: DicomStoreMeta, *, with_receipt: bool = True,
                         timeout_s: float | None = None) -> BatchResult:
        """One store event (the receiver's case): a batch of one."""
        return self.send_store_events((event,), with_receipt=with_receipt, timeout_s=timeout_s)

    def send_states(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        """dicom_state_queue, key md5(tenant_patient_study_series)."""
        return self._engine.send(model_segments(self._topics.dicom_state, states), timeout_s)

    def send_images(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        """dicom_image_queue, key md5(tenant_patient_study_series_sop)."""
        return self._engine.send(model_segments(self._topics.dicom_image, images), timeout_s)

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        """audit_queue, key tenant id."""
        return self._engine.send(model_segments(self._topics.audit, events), timeout_s)

    def send_raw(self, topic: str, items: Sequence[RawMessage], timeout_s: float | None = None) -> BatchResult:
        """(key, value, headers) tuples to any topic (used for the dead-letter topic)."""
        return self._engine.send(raw_segments(topic, items), timeout_s)

    # ------------------------------------------------------------ asyncio API
    # The same batches through the same engine (:mod:`dicomflow.kafka.aio`),
    # awaited: the event loop never blocks.

    async def send_store_events_async(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True,
                                      timeout_s: float | None = None) -> BatchResult:
        return await send_async(self._engine, self._store(events, with_receipt), timeout_s)

    async def send_store_event_async(self, event: DicomStoreMeta, *, with_receipt: bool = True,
                                     timeout_s: float | None = None) -> BatchResult:
        return await self.send_store_events_async((event,), with_receipt=with_receipt, timeout_s=timeout_s)

    async def send_states_async(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        return await send_async(self._engine, model_segments(self._topics.dicom_state, states), timeout_s)

    async def send_images_async(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        return await send_async(self._engine, model_segments(self._topics.dicom_image, images), timeout_s)

    async def send_audit_async(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        return await send_async(self._engine, model_segments(self._topics.audit, events), timeout_s)

    async def send_raw_async(self, topic: str, items: Sequence[RawMessage], timeout_s: float | None = None) -> BatchResult:
        return await send_async(self._engine, raw_segments(topic, items), timeout_s)

    # ------------------------------------------------------------ lifecycle

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding messages; returns how many are still pending."""
        return self._engine.flush(timeout_s)

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush, then stop the poll thread. Idempotent.

        Messages still unacknowledged after ``timeout_s`` are purged, so
        their senders get a failure report rather than waiting forever.
        """
        self._engine.close(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _store(self, events: Sequence[DicomStoreMeta], with_receipt: bool) -> list[Segment]:
        return store_segments(self._topics.main, self._topics.log, events, with_receipt)


__all__ = ["Publisher"]
