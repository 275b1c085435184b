"""The publisher: one idempotent producer per process, built from the settings.

INTERFACE STUB — to be implemented (issue: Kafka publisher). Other stages code
against these signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import KafkaSettings, TopicSettings


@dataclass(frozen=True)
class DeliveryFailure:
    """One message Kafka did not acknowledge."""

    index: int  # position in the batch passed in
    topic: str
    key: str | None
    reason: str


@dataclass
class BatchResult:
    """Outcome of a batch send: every message is either delivered or in ``failures``."""

    delivered: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def raise_for_failures(self) -> None:
        """Raise PublishError naming the first failures when any message failed."""
        raise NotImplementedError


class Publisher:
    """Sends every dicomflow message type to its topic with its key (DESIGN.md)."""

    def __init__(self, kafka: KafkaSettings, topics: TopicSettings) -> None:
        raise NotImplementedError

    # blocking API: returns when every message is acknowledged or failed
    def send_store_events(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True, timeout_s: float | None = None) -> BatchResult:
        """storage_queue (key: series key) and, with_receipt, log_queue (key: trace_id)."""
        raise NotImplementedError

    def send_states(self, states: Sequence[DicomStateMeta], timeout_s: float | None = None) -> BatchResult:
        raise NotImplementedError

    def send_images(self, images: Sequence[DicomImageMeta], timeout_s: float | None = None) -> BatchResult:
        raise NotImplementedError

    def send_audit(self, events: Sequence[AuditEvent], timeout_s: float | None = None) -> BatchResult:
        raise NotImplementedError

    def send_raw(self, topic: str, items: Sequence[tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]], timeout_s: float | None = None) -> BatchResult:
        """(key, value, headers) tuples to any topic (used for the dead-letter topic)."""
        raise NotImplementedError

    # asyncio API: awaitable, never blocks the event loop
    async def send_store_events_async(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True) -> BatchResult:
        raise NotImplementedError

    async def send_audit_async(self, events: Sequence[AuditEvent]) -> BatchResult:
        raise NotImplementedError

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for outstanding messages; returns how many are still pending."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError
