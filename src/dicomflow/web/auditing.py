"""Audit events of the DICOMweb server, handed off to a background thread that publishes them in batches.

A request only appends its events to a bounded in-memory queue
(:meth:`AuditSender.submit`: no encoding, no Kafka call, no thread wake-up on
the event loop). One thread per server process takes whatever has
accumulated every :data:`LINGER_S` seconds and publishes it with the
publisher's blocking :meth:`~dicomflow.kafka.producer.Publisher.send_audit`,
which waits for Kafka's acknowledgements off the event loop.

Why a thread: encoding and producing each request's events on the event
loop, and keeping the producer's poll thread flushing until Kafka's
acknowledgement, cost about a third of a retrieval's CPU time.

Nothing is dropped silently: when the queue holds :data:`CAPACITY` events
(Kafka unreachable for a long time), further events are counted in
``dicomflow_web_audit_failures`` and logged at error level (at most every
:data:`_REPORT_EVERY_S` seconds, with the count); events Kafka does not
acknowledge are counted and logged the same way. :meth:`AuditSender.close`
publishes everything still queued before returning (shutdown).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dicomflow.metrics.web import WebMetrics
from dicomflow.models import AuditEvent

if TYPE_CHECKING:
    from dicomflow.kafka.producer import Publisher

log = logging.getLogger(__name__)

#: Events held at most while Kafka is slow or away (a few MB of memory).
CAPACITY = 20_000
#: Events published in one batch at most.
BATCH = 1_000
#: Seconds the sender thread lets events accumulate between two batches. Each batch costs the
#: publisher's eager acknowledgement wait (millisecond flushes, each taking the GIL from the event
#: loop); at 20 ms the GIL hand-overs were a fifth of a retrieval's CPU time, at 250 ms they are noise.
LINGER_S = 0.25
#: Seconds between two error logs about refused events.
_REPORT_EVERY_S = 10.0


class AuditSender:
    """A bounded queue of audit events and the thread publishing it (one per server process)."""

    def __init__(self, publisher: Publisher, metrics: WebMetrics, *, capacity: int = CAPACITY,
                 linger_s: float = LINGER_S) -> None:
        self.publisher = publisher
        self.metrics = metrics
        self.capacity = capacity
        self.linger_s = linger_s
        self._pending: collections.deque[AuditEvent] = collections.deque()
        self._stop = threading.Event()
        self._closed = False
        self._refused = 0
        self._refused_reported_at = 0.0
        self._thread = threading.Thread(target=self._run, name="dicomflow-web-audit", daemon=True)
        self._thread.start()

    def submit(self, events: Sequence[AuditEvent]) -> None:
        """Queue ``events`` for publishing; never blocks, never raises (any thread)."""
        if not events:
            return
        if self._closed or len(self._pending) + len(events) > self.capacity:
            self._refuse(len(events), "the audit sender is closed" if self._closed
                         else f"{len(self._pending)} events are already waiting for Kafka")
            return
        self._pending.extend(events)  # deque.extend is atomic under the GIL: no lock needed

    def close(self, timeout_s: float = 30.0) -> None:
        """Publish what is queued, then stop the thread (idempotent; blocking)."""
        self._closed = True
        self._stop.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive() or self._pending:
            left = len(self._pending)
            self.metrics.audit_failures.inc(left)
            log.error("%d audit event(s) still unpublished after %.0f s at shutdown", left, timeout_s)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def _refuse(self, count: int, why: str) -> None:
        self.metrics.audit_failures.inc(count)
        self._refused += count
        now = time.monotonic()
        if now - self._refused_reported_at >= _REPORT_EVERY_S:
            log.error("%d audit event(s) not published since the last report: %s", self._refused, why)
            self._refused_reported_at = now
            self._refused = 0

    def _run(self) -> None:
        while True:
            stopping = self._stop.wait(self.linger_s)
            while self._pending:
                batch: list[AuditEvent] = []
                while self._pending and len(batch) < BATCH:
                    batch.append(self._pending.popleft())
                self._publish(batch)
            if stopping:
                return

    def _publish(self, batch: list[AuditEvent]) -> None:
        try:
            result = self.publisher.send_audit(batch)
        except Exception:
            self.metrics.audit_failures.inc(len(batch))
            log.exception("publishing %d audit event(s) failed", len(batch))
            return
        if not result.ok:
            self.metrics.audit_failures.inc(len(result.failures))
            log.error("%d audit event(s) not acknowledged by Kafka: %s", len(result.failures),
                      result.failures[0].reason)


__all__ = ["BATCH", "CAPACITY", "LINGER_S", "AuditSender"]
