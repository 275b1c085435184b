"""The change publisher: change-log rows past the outbox position → ``dicom_change_queue``, then the position moves.

One round, one transaction: lock the outbox row (:func:`~dicomflow.store.outbox.claim_position`),
read up to ``lifecycle.publish_batch`` rows past it, publish them (key:
study UID) and wait for Kafka's acknowledgements, then advance the position
and commit. A crash before the commit publishes the same rows again on the
next round: at least once. The producer is idempotent with acks=all, and
every message of a study goes to the study's partition in sequence order,
so a study's changes arrive in order (a republished run repeats, never
reorders, what came before).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import psycopg

from dicomflow.kafka.producer import Publisher
from dicomflow.lifecycle.events import ChangeEvent
from dicomflow.lifecycle.exceptions import LifecycleError
from dicomflow.models import encode
from dicomflow.store import outbox

log = logging.getLogger(__name__)


def event_of(row: outbox.ChangeRow) -> ChangeEvent:
    return ChangeEvent(
        sequence=row.sequence, tenant_id=row.tenant_id, study_uid=row.study_uid, series_uid=row.series_uid,
        sop_uid=row.sop_uid, action=row.action,  # type: ignore[arg-type]  # CHECK constraint: the three actions
        state=row.state,  # type: ignore[arg-type]
        timestamp=row.timestamp.astimezone(dt.UTC),
    )


class ChangePublisher:
    """Publishes the change log, as one outbox position named after the topic."""

    def __init__(self, producer: Publisher, topic: str, *, batch: int, timeout_s: float = 30.0) -> None:
        self.producer = producer
        self.topic = topic
        self.batch = batch
        self.timeout_s = timeout_s

    def round(self, conn: psycopg.Connection[Any]) -> int:
        """Publish the next rows past the position; returns how many (0: caught up).

        Raises:
            LifecycleError: Kafka did not acknowledge every message (the
                position stays; the next round publishes them again).
            psycopg.Error: PostgreSQL failed (rolled back, the same).
        """
        with conn.transaction():
            position = outbox.claim_position(conn, self.topic)
            rows = outbox.changes_after(conn, position, self.batch)
            if not rows:
                return 0
            events = [event_of(r) for r in rows]
            result = self.producer.send_raw(
                self.topic, [(e.key().encode(), encode(e), None) for e in events], timeout_s=self.timeout_s)
            if not result.ok:
                raise LifecycleError(f"{self.topic}: {len(result.failures)} of {len(events)} change events were not "
                                     f"acknowledged: {result.failures[0]}")
            outbox.advance(conn, self.topic, rows[-1].sequence)
        log.debug("published changes %d..%d to %s", rows[0].sequence, rows[-1].sequence, self.topic)
        return len(rows)


__all__ = ["ChangePublisher", "event_of"]
