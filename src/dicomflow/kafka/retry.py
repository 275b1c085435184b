"""The consumer loops' retry: poison or transient, pause and back off while polling, stop within a poll.

Every consumer loop (the pipeline, the warehouse sink, the image workers)
retries a failed step the same way:

- whether a failure is *poison* (dead-letter the input, never retry it) or
  *transient* (retry, commit nothing past it) is :func:`dicomflow.errors.is_poison`;
  :func:`is_transient` adds the third case, a fatal client error (or an
  exception that is not ours: a bug) that no retry can cure;
- a transient failure pauses every partition the member owns and backs off
  with capped exponential delays (:func:`backoff_delay`); while it waits the
  loop keeps polling (paused partitions return nothing), so the member stays
  in its group and serves rebalances; a partition assigned meanwhile is
  paused too; consumption resumes once the step went through;
- the wait is the poll calls themselves, none longer than
  :data:`POLL_MAX_S`, and it ends as soon as the loop's stop event is set:
  a SIGTERM (whose handler only sets the event) is honoured within a second
  even in the middle of a ten-second backoff.

Pure logic apart from the consumer it pauses (any :class:`Pausable`); the
clock is injected, so tests need no real waiting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from dicomflow.errors import ConsumerError, DicomflowError, is_poison
from dicomflow.kafka.records import TP

log = logging.getLogger(__name__)

#: Longest single poll of a consumer loop while it waits (idle, or backing off): the bound
#: within which a loop sees its stop event.
POLL_MAX_S = 0.5


class Pausable(Protocol):
    """What the retry needs of a consumer (``dicomflow.kafka.consumer.KafkaConsumer``)."""

    def assignment(self) -> set[TP]: ...

    def pause(self, partitions: Iterable[TP]) -> None: ...

    def resume(self, partitions: Iterable[TP]) -> None: ...


def backoff_delay(attempt: int, initial_ms: int, max_ms: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): doubling, capped.

    attempt 1 waits ``initial_ms``, attempt 2 twice that, ... never more
    than ``max_ms``.
    """
    if attempt < 1:
        return 0.0
    delay_ms: int = initial_ms * (2 ** min(attempt - 1, 30))
    return float(min(delay_ms, max(max_ms, initial_ms))) / 1000.0


def is_transient(exc: BaseException) -> bool:
    """True when retrying may help: one of our errors, neither poison nor a fatal client error."""
    if not isinstance(exc, DicomflowError) or is_poison(exc):
        return False
    return not (isinstance(exc, ConsumerError) and exc.fatal)


class PausedRetry:
    """Which partitions are paused for a step in retries, and the wait before the next attempt.

    One per loop; ``stop`` is the loop's stop event (set by its signal
    handler or by another thread).
    """

    def __init__(self, initial_ms: int, max_ms: int, stop: threading.Event, *,
                 clock: Callable[[], float] = time.monotonic, poll_max_s: float = POLL_MAX_S) -> None:
        self._initial_ms = initial_ms
        self._max_ms = max_ms
        self._stop = stop
        self._clock = clock
        self._poll_max_s = poll_max_s
        #: Partitions paused by this policy (resumed together).
        self.paused: set[TP] = set()
        #: True from the first failed attempt until the step went through (or was given up).
        self.retrying = False

    def hold_new(self, consumer: Pausable, partitions: Iterable[TP]) -> None:
        """While retrying, pause the partitions records arrive from (a fresh assignment) too."""
        if not self.retrying:
            return
        fresh = set(partitions) - self.paused
        if fresh:  # newly assigned while a step is stuck: hold them too
            consumer.pause(fresh)
            self.paused |= fresh

    def forget(self, partitions: Collection[TP]) -> None:
        """Revoked partitions are no longer ours to resume."""
        self.paused -= set(partitions)

    def wait(self, exc: Exception, attempt: int, consumer: Pausable, poll: Callable[[float], object],
             what: str = "batch") -> bool:
        """Pause everything owned, back off while calling ``poll(timeout)``; False when the loop must stop."""
        delay = backoff_delay(attempt, self._initial_ms, self._max_ms)
        log.warning("%s: attempt %s failed (%s: %s); retrying in %.1f s, consumption paused",
                    what, attempt, type(exc).__name__, exc, delay)
        if not self.retrying:
            self.retrying = True
            owned = consumer.assignment()
            consumer.pause(owned)
            self.paused |= owned
        deadline = self._clock() + delay
        while not self._stop.is_set():
            left = deadline - self._clock()
            if left <= 0:
                return True
            # Keeps the member alive and serves rebalances; paused partitions return nothing.
            poll(min(left, self._poll_max_s))
        return False

    def attempt(
        self,
        step: Callable[[], object],
        consumer: Pausable,
        poll: Callable[[float], object],
        *,
        what: str = "batch",
        on_retry: Callable[[Exception], None] | None = None,
        on_poison: Callable[[DicomflowError], bool] | None = None,
    ) -> bool:
        """Run ``step`` until it returns; True when it did, False when the stop event ended the waits.

        A transient failure (:func:`is_transient`) is counted (``on_retry``),
        then waited out (:meth:`wait`) and the step runs again. A poison
        failure goes to ``on_poison`` when given: True means it was handled
        (the culprits set aside), so the step runs again at once; False
        means no single input was to blame, so it backs off like a
        transient one. Without ``on_poison`` it is raised, for the caller
        to dead-letter. Resuming is the caller's (:meth:`resume`, in a
        ``finally``), so several steps of one batch share one pause.

        Raises:
            DicomflowError: a poison failure without ``on_poison``, or a fatal client error.
            Exception: anything that is not a DicomflowError (a bug: never retried).
        """
        attempt = 0
        while True:
            try:
                step()
                return True
            except DicomflowError as exc:
                if is_poison(exc):
                    if on_poison is None:
                        raise
                    if on_poison(exc):
                        continue
                elif not is_transient(exc):
                    raise
                attempt += 1
                if on_retry is not None:
                    on_retry(exc)
                if not self.wait(exc, attempt, consumer, poll, what):
                    return False

    def resume(self, consumer: Pausable) -> None:
        """The step is done (or given up): resume what was paused."""
        if self.paused:
            consumer.resume(self.paused)
            log.info("consumption resumed")
        self.paused = set()
        self.retrying = False


__all__ = ["POLL_MAX_S", "Pausable", "PausedRetry", "backoff_delay", "is_transient"]
