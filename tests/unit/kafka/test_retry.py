"""The consumer loops' paused retry: what is poison, what is retried, pausing, backoff and the stop.

Pure logic: the clock is injected and advanced by the poll calls (a poll
"waits" exactly its timeout), so nothing here sleeps; the consumer is a
recorder of pause/resume calls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import pytest

from dicomflow.errors import ConsumerError, DicomflowError, PublishError, StoreError
from dicomflow.kafka.records import TP
from dicomflow.kafka.retry import POLL_MAX_S, PausedRetry, backoff_delay, is_transient
from dicomflow.store import StoreDataError

A, B, C = ("t", 0), ("t", 1), ("t", 2)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Member:
    """Owns partitions, records pause and resume calls and the polls made while waiting."""

    def __init__(self, clock: Clock, owned: set[TP]) -> None:
        self.clock = clock
        self.owned = set(owned)
        self.paused: set[TP] = set()
        self.polls: list[float] = []
        self.on_poll: list[object] = []

    def assignment(self) -> set[TP]:
        return set(self.owned)

    def pause(self, partitions: Iterable[TP]) -> None:
        self.paused |= set(partitions)

    def resume(self, partitions: Iterable[TP]) -> None:
        self.paused -= set(partitions)

    def poll(self, timeout_s: float) -> None:
        self.polls.append(timeout_s)
        self.clock.now += timeout_s


def make(owned: set[TP] = frozenset({A, B})) -> tuple[PausedRetry, Member, Clock, threading.Event]:  # type: ignore[assignment]
    clock = Clock()
    stop = threading.Event()
    return PausedRetry(200, 1000, stop, clock=clock), Member(clock, owned), clock, stop


def test_backoff_doubles_from_initial_and_is_capped() -> None:
    delays = [backoff_delay(a, 200, 10000) for a in range(1, 10)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert max(delays) == 10.0
    assert delays == sorted(delays)
    assert backoff_delay(0, 200, 10000) == 0.0
    assert backoff_delay(1000, 200, 10000) == 10.0


def test_poison_and_fatal_are_not_transient_everything_else_of_ours_is() -> None:
    assert is_transient(StoreError("connection lost"))
    assert is_transient(PublishError("not acknowledged"))
    assert is_transient(ConsumerError("commit timed out"))
    assert not is_transient(StoreDataError("numeric field overflow", sqlstate="22003"))  # poison
    assert not is_transient(ConsumerError("fenced", fatal=True))
    assert not is_transient(ValueError("a bug"))


def test_wait_pauses_what_is_owned_and_keeps_polling_for_the_whole_delay() -> None:
    retry, member, clock, _ = make()
    start = clock.now
    assert retry.wait(StoreError("down"), 3, member, member.poll)  # attempt 3: 0.8 s
    assert member.paused == {A, B} and retry.paused == {A, B} and retry.retrying
    assert clock.now - start == pytest.approx(0.8)
    assert all(t <= POLL_MAX_S for t in member.polls) and len(member.polls) == 2


def test_a_long_backoff_is_cut_into_polls_no_longer_than_the_stop_bound() -> None:
    clock = Clock()
    member = Member(clock, {A})
    retry = PausedRetry(10000, 10000, threading.Event(), clock=clock)
    assert retry.wait(StoreError("down"), 1, member, member.poll)
    assert sum(member.polls) == pytest.approx(10.0)
    assert max(member.polls) <= POLL_MAX_S


def test_the_stop_event_ends_a_backoff_after_the_poll_in_progress() -> None:
    clock = Clock()
    member = Member(clock, {A})
    stop = threading.Event()
    retry = PausedRetry(10000, 10000, stop, clock=clock)

    def poll(timeout_s: float) -> None:
        member.poll(timeout_s)
        if len(member.polls) == 2:
            stop.set()  # the signal handler, while the loop is inside the second poll

    start = clock.now
    assert not retry.wait(StoreError("down"), 1, member, poll)
    assert len(member.polls) == 2 and clock.now - start <= 2 * POLL_MAX_S


def test_partitions_assigned_while_retrying_are_held_too_and_revoked_ones_forgotten() -> None:
    retry, member, _, _ = make()
    retry.hold_new(member, [C])
    assert member.paused == set()  # not retrying: nothing to hold
    retry.wait(StoreError("down"), 1, member, member.poll)
    member.owned.add(C)
    retry.hold_new(member, [C, A])
    assert member.paused == {A, B, C} and retry.paused == {A, B, C}
    retry.forget([B])
    retry.resume(member)
    assert member.paused == {B}  # revoked: not ours to resume
    assert retry.paused == set() and not retry.retrying


def test_attempt_retries_transient_failures_with_growing_delays_then_succeeds() -> None:
    retry, member, clock, _ = make()
    failures = [StoreError("down"), PublishError("no ack")]
    retried: list[Exception] = []
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if failures:
            raise failures.pop(0)

    start = clock.now
    assert retry.attempt(step, member, member.poll, on_retry=retried.append)
    assert len(calls) == 3 and [type(e) for e in retried] == [StoreError, PublishError]
    assert clock.now - start == pytest.approx(0.2 + 0.4)
    assert member.paused == {A, B}  # the caller resumes (several steps of a batch share one pause)
    retry.resume(member)
    assert member.paused == set()


def test_attempt_raises_poison_at_once_when_the_caller_does_not_handle_it() -> None:
    retry, member, _, _ = make()

    def step() -> None:
        raise StoreDataError("value out of range")

    with pytest.raises(StoreDataError):
        retry.attempt(step, member, member.poll)
    assert member.polls == [] and not retry.retrying  # no backoff: retrying poison cannot help


def test_handled_poison_runs_again_at_once_unhandled_poison_backs_off() -> None:
    retry, member, clock, _ = make()
    outcomes: list[DicomflowError | None] = [StoreDataError("bad"), StoreDataError("bad"), None]
    handled = iter([True, False])

    def step() -> None:
        exc = outcomes.pop(0)
        if exc is not None:
            raise exc

    start = clock.now
    assert retry.attempt(step, member, member.poll, on_poison=lambda _exc: next(handled))
    assert clock.now - start == pytest.approx(0.2)  # one backoff: the unhandled one


@pytest.mark.parametrize("exc", [ConsumerError("fatal client error", fatal=True), KeyError("a bug")])
def test_fatal_errors_and_bugs_are_raised_never_retried(exc: Exception) -> None:
    retry, member, _, _ = make()

    def step() -> None:
        raise exc

    with pytest.raises(type(exc)):
        retry.attempt(step, member, member.poll)
    assert member.polls == []


def test_attempt_gives_up_when_stopped_during_the_backoff() -> None:
    retry, member, _, stop = make()
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        stop.set()  # SIGTERM arrives while the step fails
        raise PublishError("dead-letter topic refuses the message")

    assert not retry.attempt(step, member, member.poll)
    assert calls == [1] and member.polls == []
