"""The journal's background publisher: durable store events to Kafka, at least once, in batches.

:class:`JournalPublisher` takes the entries the journal made durable (or
found in an orphaned segment at start-up) and sends their store events and
receipts in batches of up to :data:`BATCH` with the receiver's producer.
What Kafka acknowledged is reported back (``on_published``), so the
journal can remove a segment once every record in it is out; what it did
not is sent again after a capped exponential backoff, for ever (Kafka down
for an hour means an hour of retries; the journal's backlog limit makes new
C-STOREs answer out of resources meanwhile). A store event may therefore
reach Kafka twice (a batch partly acknowledged, a segment replayed after a
kill): the consumer's writes are upserts, so that is harmless.

Delivery errors are never raised here: they are logged (one line per
outage, not per message) and retried.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dicomflow.errors import PublishError
from dicomflow.ingest.journal_segment import Segment
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta

log = logging.getLogger(__name__)

#: Store events per Kafka batch.
BATCH = 500
_RETRY_INITIAL_S = 0.2
_RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class Entry:
    """One durable record: its store event and the segment it is in."""

    event: DicomStoreMeta
    segment: Segment


class JournalPublisher:
    """Publishes journal entries on a thread of its own (see the module documentation)."""

    def __init__(self, publisher: Publisher, *, timeout_s: float,
                 on_published: Callable[[Sequence[Entry]], None]) -> None:
        self.publisher = publisher
        self.timeout_s = timeout_s
        self.on_published = on_published
        self._pending: deque[Entry] = deque()
        self._cond = threading.Condition()
        self._busy = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dicomflow-journal-publish", daemon=True)
        self._thread.start()

    def put(self, entries: Sequence[Entry]) -> None:
        """Publish these soon (they are durable already)."""
        if not entries:
            return
        with self._cond:
            self._pending.extend(entries)
            self._cond.notify_all()

    def backlog(self) -> int:
        """Entries not yet acknowledged by Kafka (queued or being sent)."""
        with self._cond:
            return len(self._pending) + self._busy

    def drain(self, timeout_s: float) -> bool:
        """Wait until every entry is acknowledged or ``timeout_s`` passes; True when drained."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        """Stop the thread; what is not acknowledged stays in the journal for the next start."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(self.timeout_s + 5.0)

    def _take(self) -> list[Entry] | None:
        with self._cond:
            while not self._pending and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            self._busy = len(batch)
            return batch

    def _run(self) -> None:
        backoff = _RETRY_INITIAL_S
        failing = False
        while (batch := self._take()) is not None:
            failed = self._send(batch, quiet=failing)
            done = [e for i, e in enumerate(batch) if i not in failed]
            if done:
                try:
                    self.on_published(done)
                except Exception:  # an observer of the bookkeeping: the events are out
                    log.exception("journal: bookkeeping after publishing failed")
            with self._cond:
                self._pending.extendleft(reversed([batch[i] for i in sorted(failed)]))
                self._busy = 0
                self._cond.notify_all()
            if not failed:
                if failing:
                    log.warning("journal: Kafka acknowledges again; %d event(s) still to publish", self.backlog())
                failing, backoff = False, _RETRY_INITIAL_S
                continue
            with self._cond:
                if self._stopping:
                    return
                self._cond.wait(backoff)
            backoff = min(2 * backoff, _RETRY_MAX_S)
            failing = True

    def _send(self, batch: list[Entry], *, quiet: bool) -> set[int]:
        """Send one batch; the positions Kafka did not acknowledge (logged unless ``quiet``: a known outage)."""
        try:
            result = self.publisher.send_store_events([e.event for e in batch], timeout_s=self.timeout_s)
        except PublishError as exc:
            if not quiet:
                log.warning("journal: cannot publish %d store event(s), retrying: %s", len(batch), exc)
            return set(range(len(batch)))
        failed = result.failed_indices()
        if failed and not quiet:
            log.warning("journal: %d of %d store event(s) not acknowledged, retrying: %s",
                        len(failed), len(batch), result.failures[0].reason)
        return failed


__all__ = ["BATCH", "Entry", "JournalPublisher"]
