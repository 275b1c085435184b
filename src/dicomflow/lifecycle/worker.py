"""``dicomflow purge``'s loop: publish the change log, purge due deletes, until stopped or idle.

Why the change publisher runs here and not in the consumer: deletes are
written by the web server and the CLI, not only by the consumer's batches,
and one outbox position must be followed by one publisher at a time (its
row lock makes a second one wait). A ``dicomflow purge`` process therefore
is the one place both propagation steps run, each round in its own
transaction; more than one may run (the outbox row serialises publishing,
the purge queue is shared with ``SKIP LOCKED``).

Failures of PostgreSQL, Kafka or the object store are transient: the round
was rolled back, the connection is dropped, and the loop retries with
capped exponential backoff until the dependency is back; nothing is lost
and nothing is done twice except a republication (at least once).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from dicomflow.blobs import BlobUnavailable, open_store
from dicomflow.kafka.producer import Publisher
from dicomflow.lifecycle.exceptions import LifecycleError
from dicomflow.lifecycle.publisher import ChangePublisher
from dicomflow.lifecycle.purge import Purger
from dicomflow.settings import Settings

log = logging.getLogger(__name__)

_IDLE_POLL_S = 0.2
_BACKOFF_MAX_S = 5.0


@dataclass
class RoundResult:
    """What the worker did in total."""

    published: int = 0
    purged: int = 0
    failures: int = 0


class LifecycleWorker:
    """Runs :class:`ChangePublisher` and :class:`Purger` rounds over one reused connection."""

    def __init__(self, settings: Settings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.settings.database.conninfo(), autocommit=True)
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:  # already gone
                pass

    def run(self, *, until_idle_s: float | None = None) -> RoundResult:
        """Loop until ``stop`` is set, or until nothing was to do for ``until_idle_s`` seconds."""
        s = self.settings
        total = RoundResult()
        store = open_store(s.storage, fsync=s.ingest.fsync)
        with Publisher(s.kafka, s.topics, client_id="dicomflow-lifecycle") as producer:
            purger = Purger(store, str(s.storage.root), producer, batch=s.lifecycle.purge_batch)
            publisher = ChangePublisher(producer, s.topics.change, batch=s.lifecycle.publish_batch)
            idle_since = time.monotonic()
            backoff = 0.1
            try:
                while not self.stop.is_set():
                    try:
                        conn = self._connection()
                        published = publisher.round(conn)
                        purged = purger.round(conn)
                    except (psycopg.Error, LifecycleError, BlobUnavailable) as exc:
                        total.failures += 1
                        log.warning("lifecycle round failed (%s: %s); retrying in %.1f s", type(exc).__name__, exc,
                                    backoff)
                        self._drop()
                        self.stop.wait(backoff)
                        backoff = min(_BACKOFF_MAX_S, backoff * 2)
                        continue
                    backoff = 0.1
                    total.published += published
                    total.purged += purged
                    if published or purged:
                        idle_since = time.monotonic()
                        continue
                    if until_idle_s is not None and time.monotonic() - idle_since >= until_idle_s:
                        break
                    self.stop.wait(_IDLE_POLL_S)
            finally:
                self._drop()
        return total


__all__ = ["LifecycleWorker", "RoundResult"]
