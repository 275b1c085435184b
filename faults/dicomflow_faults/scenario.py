"""The fault run: C-STORE load through receiver -> Kafka -> consumer -> PostgreSQL, with SIGKILLs.

A sender (:class:`~dicomflow_faults.sender.StoreSender`) stores every
generated instance into ``dicomflow scp`` and retries until each one is
acknowledged, while ``dicomflow consume`` indexes them. Meanwhile the kill
schedule SIGKILLs, one at a time, the consumer, the receiver, the Kafka
broker and PostgreSQL, and restarts each after a short random down time.

The schedule (:func:`plan`) is drawn from the seed: the faults are shuffled
and each one fires when the number of acknowledged instances reaches a
random point inside its own slice of the load, then after a random delay
of up to a second, so the faults are spread over the whole run and land at
arbitrary moments of a batch or an association, reproducibly.

A fault is *survived* when the killed service came back and, after its
restart, the pipeline made progress end to end: new instances acknowledged
to the sender and new instance rows in PostgreSQL (or there was nothing
left to do). The run as a whole is then judged by :mod:`~dicomflow_faults.checks`:
every acknowledged instance indexed exactly once, series counts right,
nothing good dead-lettered, no component exiting by itself.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomflow.errors import StackError
from dicomflow_faults.checks import (
    Check,
    RowCounter,
    count_rows,
    read_dead_letters,
    read_rows,
    subset_check,
    wait_drained,
)
from dicomflow_faults.instances import Generated, generate
from dicomflow_faults.privstack import Phase, PrivateStack
from dicomflow_faults.sender import SendStats, StoreSender
from dicomflow_faults.supervisor import Component, Exit, Supervisor, component_env, port_open

log = logging.getLogger(__name__)

FaultKind = Literal["consumer", "receiver", "kafka", "postgres", "s3proxy"]
#: The kinds of the main fault run (``s3proxy`` belongs to the S3 run, :mod:`.s3run`).
KINDS: tuple[FaultKind, ...] = ("consumer", "receiver", "kafka", "postgres")


@dataclass
class Fault:
    """One planned SIGKILL and what came of it (times in seconds since the load started)."""

    kind: FaultKind
    at_acked: int
    delay_s: float
    down_s: float
    injected_s: float | None = None
    during_load: bool = True
    restarted_s: float | None = None
    back_s: float | None = None
    acked_at_restart: int = 0
    rows_at_restart: int | None = None
    progressed: bool = False
    error: str = ""

    @property
    def survived(self) -> bool:
        return self.restarted_s is not None and not self.error and self.progressed


def plan(kinds: Sequence[FaultKind], per_kind: int, total: int, rng: random.Random,
         down_range: tuple[float, float] = (0.5, 3.0)) -> list[Fault]:
    """The kill schedule: ``per_kind`` faults of each kind, shuffled, spread over 5-85 % of the load."""
    order = [k for k in kinds for _ in range(per_kind)]
    rng.shuffle(order)
    if not order:
        return []
    lo, hi = 0.05 * total, 0.85 * total
    width = (hi - lo) / len(order)
    return [
        Fault(kind, int(lo + width * (i + rng.random())), rng.uniform(0.0, 1.0), rng.uniform(*down_range))
        for i, kind in enumerate(order)
    ]


@dataclass(frozen=True)
class Sample:
    """Progress at one moment: acknowledged instances and instance rows (None: PostgreSQL down)."""

    t_s: float
    acked: int
    rows: int | None


@dataclass
class FaultRunResult:
    """Figures and verdicts of the fault run."""

    instances: int
    faults: list[Fault] = field(default_factory=list)
    acked: int = 0
    send: SendStats | None = None
    generate_s: float = 0.0
    catch_up_s: float = 0.0
    lost: int = 0
    duplicates: int = 0
    stored_unacknowledged: int = 0
    dead_lettered: int = 0
    good_dead_lettered: int = 0
    crashes: list[Exit] = field(default_factory=list)
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    @property
    def load_rate(self) -> float:
        """Acknowledged instances per second over the sending time, faults included."""
        return self.acked / self.send.seconds if self.send and self.send.seconds else 0.0


class _Monitor:
    """Samples progress twice a second in the background."""

    def __init__(self, sender: StoreSender, phase: Phase, started: float) -> None:
        self.sender = sender
        self.phase = phase
        self.started = started
        self.samples: list[Sample] = []
        self.rows = RowCounter(phase.settings.database)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="faults-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.5):
                sample = Sample(time.monotonic() - self.started, self.sender.acked_count(), self.rows.count())
                with self._lock:
                    self.samples.append(sample)
        finally:
            self.rows.close()

    def last_rows(self) -> int | None:
        with self._lock:
            for s in reversed(self.samples):
                if s.rows is not None:
                    return s.rows
        return None

    def after(self, t_s: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.t_s > t_s]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _wait_listening(component: Component, port: int, timeout_s: float) -> None:
    """Wait until the receiver accepts connections.

    Raises:
        StackError: it exited or did not listen in time.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(port):
            return
        if not component.alive():
            raise StackError(f"{component.name} exited during start-up; see {component.log_path}")
        time.sleep(0.1)
    raise StackError(f"{component.name} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


class FaultRun:
    """Drives one fault run; :meth:`run` returns the result (it never leaves a component running)."""

    def __init__(self, stack: PrivateStack, instances: int, *, seed: int, log_dir: Path,
                 per_kind: int = 2, kinds: Sequence[FaultKind] = KINDS, associations: int = 4,
                 rate: float | None = None, down_range: tuple[float, float] = (0.5, 3.0),
                 receiver_processes: int = 1, name: str = "faults", s3: bool = False,
                 ack: Literal["kafka", "journal"] = "kafka") -> None:
        self.stack = stack
        self.instances = instances
        self.rng = random.Random(seed)
        self.seed = seed
        self.log_dir = log_dir
        self.associations = associations
        self.rate = rate
        self.result = FaultRunResult(instances, plan(kinds, per_kind, instances, self.rng, down_range))
        #: Prefix of the checks' names ("faults", "s3").
        self.name = name
        phase = stack.new_phase(name, s3=s3)
        #: The phase's settings; ``ack`` as asked (receiver.ack: when Success is answered).
        self.phase = dataclasses.replace(phase, settings=dataclasses.replace(
            phase.settings, receiver=dataclasses.replace(phase.settings.receiver, ack=ack)))
        #: SOP Instance UIDs the sender saw acknowledged (filled by :meth:`run`).
        self.acked: set[str] = set()
        self.supervisor = Supervisor(restart_crashed=True)
        env = component_env({**self.phase.env(), "DICOMFLOW_RECEIVER_PROCESSES": str(receiver_processes)})
        self.receiver = self.supervisor.add(Component("receiver", ["scp"], env, log_dir, cwd=log_dir))
        self.consumer = self.supervisor.add(Component("consumer", ["consume"], env, log_dir, cwd=log_dir))

    # ------------------------------------------------------------------ run

    def run(self) -> FaultRunResult:
        """Generate, start the components, send under the kill schedule, wait, check.

        Raises:
            StackError: a component or service could not be started at all.
        """
        r = self.result
        t0 = time.monotonic()
        generated = generate(self.stack.phase_dir(self.phase) / "outbox", self.instances, seed=self.seed,
                             worker_node_id="faults-sender")
        r.generate_s = time.monotonic() - t0
        files = [(i.sop_uid, i.path) for i in generated.instances]
        self.rng.shuffle(files)  # studies arrive interleaved, as from several modalities
        receiver_port = self.phase.settings.receiver.port
        acked: set[str] = set()
        self.supervisor.start_watching()
        try:
            self.consumer.start()
            self.receiver.start()
            _wait_listening(self.receiver, receiver_port, 60.0)
            sender = StoreSender("127.0.0.1", receiver_port, self.phase.settings.receiver.ae_title, files,
                                 associations=self.associations, rate=self.rate)
            started = time.monotonic()
            monitor = _Monitor(sender, self.phase, started)
            sender.start()
            monitor.start()
            try:
                self._inject_all(sender, monitor, started)
                self._wait_sent(sender, timeout_s=max(300.0, self.instances / 20.0))
                sender.stop()
                r.send = sender.stats
                r.acked = sender.acked_count()
                acked = self.acked = sender.acknowledged()
                r.catch_up_s = self._catch_up(acked, timeout_s=max(180.0, self.instances / 50.0))
            finally:
                sender.stop()
                monitor.stop()
            self._judge_faults(monitor)
        finally:
            self.supervisor.stop_watching()
            r.exit_codes = {
                "consumer": self.consumer.terminate(timeout_s=60.0),
                "receiver": self.receiver.terminate(timeout_s=60.0),
            }
            r.crashes = self.supervisor.crashes()
        self._check(generated, acked)
        return r

    # ------------------------------------------------------------------ faults

    def _inject_all(self, sender: StoreSender, monitor: _Monitor, started: float) -> None:
        for fault in self.result.faults:
            self._wait_acked(sender, fault.at_acked)
            time.sleep(fault.delay_s)
            fault.during_load = not sender.wait(0)
            self._inject(fault, sender, monitor, started)
            self._settle(fault, sender, monitor, timeout_s=60.0)

    @staticmethod
    def _wait_acked(sender: StoreSender, count: int, stall_s: float = 120.0) -> None:
        """Wait until ``count`` instances are acknowledged, the load is over, or acks stall ``stall_s``."""
        seen, progress_at = -1, time.monotonic()
        while sender.acked_count() < count and not sender.wait(0.1):
            if sender.acked_count() > seen:
                seen, progress_at = sender.acked_count(), time.monotonic()
            elif time.monotonic() - progress_at > stall_s:
                log.error("fault run: no acknowledgement for %.0f s; injecting the next fault anyway", stall_s)
                return

    def _actions(self, kind: FaultKind) -> tuple[Callable[[], object], Callable[[], object]]:
        """(kill, restart-and-wait-until-up) for one kind of fault."""
        port = self.phase.settings.receiver.port

        def restart_receiver() -> None:
            self.supervisor.restart("receiver")
            _wait_listening(self.receiver, port, 60.0)

        return {
            "consumer": (lambda: self.supervisor.kill("consumer"), lambda: self.supervisor.restart("consumer")),
            "receiver": (lambda: self.supervisor.kill("receiver"), restart_receiver),
            "kafka": (self.stack.kill_kafka, self.stack.start_kafka),
            "postgres": (self.stack.kill_postgres, self.stack.start_postgres),
            "s3proxy": (self.stack.kill_s3, self.stack.start_s3),
        }[kind]

    def _inject(self, fault: Fault, sender: StoreSender, monitor: _Monitor, started: float) -> None:
        kill, restart = self._actions(fault.kind)
        fault.injected_s = time.monotonic() - started
        log.warning("fault: SIGKILL %s at %.1f s (%d acknowledged)", fault.kind, fault.injected_s, sender.acked_count())
        try:
            kill()
        except (OSError, StackError) as exc:
            fault.error = f"kill failed: {exc}"
            log.error("fault: killing %s failed: %s", fault.kind, exc)
            return
        time.sleep(fault.down_s)
        t_restart = time.monotonic()
        try:
            restart()
        except (OSError, StackError) as exc:
            fault.error = f"restart failed: {exc}"
            log.error("fault: restarting %s failed: %s", fault.kind, exc)
            return
        fault.restarted_s = time.monotonic() - started
        fault.back_s = time.monotonic() - t_restart
        fault.acked_at_restart = sender.acked_count()
        fault.rows_at_restart = count_rows(self.phase.settings.database)
        log.warning("fault: %s back after %.1f s down + %.1f s restart", fault.kind, fault.down_s, fault.back_s)

    def _settle(self, fault: Fault, sender: StoreSender, monitor: _Monitor, timeout_s: float) -> None:
        """Before the next fault, wait until this one's recovery shows (new acks or new rows)."""
        if fault.restarted_s is None:
            return
        deadline = time.monotonic() + timeout_s
        rows0 = fault.rows_at_restart or 0
        while time.monotonic() < deadline:
            rows = monitor.last_rows() or 0
            if sender.wait(0) or sender.acked_count() > fault.acked_at_restart or rows > rows0:
                return
            time.sleep(0.2)

    def _judge_faults(self, monitor: _Monitor) -> None:
        """A fault is survived when acks and rows both grew after its restart (or had nothing left to do)."""
        for fault in self.result.faults:
            if fault.restarted_s is None:
                continue
            later = monitor.after(fault.restarted_s)
            rows0 = fault.rows_at_restart if fault.rows_at_restart is not None else -1
            acks_grew = any(s.acked > fault.acked_at_restart for s in later) or fault.acked_at_restart == self.result.acked
            rows_grew = any(s.rows is not None and s.rows > rows0 for s in later) or rows0 >= self.result.acked
            fault.progressed = acks_grew and rows_grew

    # ------------------------------------------------------------------ end

    def _catch_up(self, acked: set[str], timeout_s: float, stall_s: float = 90.0) -> float:
        """Wait until every acknowledged instance has its row and the consumer group has no lag.

        Gives up early when no missing row appears for ``stall_s`` (a stuck
        consumer: waiting longer would only delay the report that says so).
        """
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        found, progress_at = -1, t0
        while time.monotonic() < deadline:
            try:
                rows = read_rows(self.phase.settings.database).sop_uids
            except Exception:  # noqa: BLE001 - PostgreSQL may still be in crash recovery
                rows = set()
            present = len(acked & rows)
            if present == len(acked):
                break
            if present > found:
                found, progress_at = present, time.monotonic()
            elif time.monotonic() - progress_at > stall_s:
                log.error("fault run: no new instance row for %.0f s, %d acknowledged instance(s) still missing",
                          stall_s, len(acked) - present)
                break
            time.sleep(1.0)
        wait_drained(self.phase.settings.kafka, self.phase.settings.topics,
                     min(max(deadline - time.monotonic(), 10.0), stall_s))
        return time.monotonic() - t0

    @staticmethod
    def _wait_sent(sender: StoreSender, timeout_s: float, stall_s: float = 120.0) -> None:
        """Wait for the last acknowledgement; give up after ``timeout_s`` or ``stall_s`` without a new one."""
        deadline = time.monotonic() + timeout_s
        seen, progress_at = -1, time.monotonic()
        while not sender.wait(1.0):
            now_acked = sender.acked_count()
            if now_acked > seen:
                seen, progress_at = now_acked, time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - progress_at > stall_s:
                log.error("fault run: %d of %d instances acknowledged; the sender gives up", now_acked, sender.total)
                return

    def _check(self, generated: Generated, acked: set[str]) -> None:
        r, n = self.result, self.name
        summary = read_rows(self.phase.settings.database)
        ours = generated.sop_uids
        check, missing = subset_check(f"{n}: every acknowledged instance is in PostgreSQL", acked, summary.sop_uids)
        r.lost = len(missing)
        r.duplicates = summary.duplicate_rows
        r.stored_unacknowledged = len(summary.sop_uids - acked)
        strangers = summary.sop_uids - ours
        dead = read_dead_letters(self.phase.settings.kafka, self.phase.settings.topics.dlq)
        r.dead_lettered = len(dead)
        r.good_dead_lettered = sum(1 for d in dead if d.sop_uid in ours)
        consumer_crashes = [e for e in r.crashes if e.component == "consumer"]
        receiver_crashes = [e for e in r.crashes if e.component == "receiver"]
        failed_faults = [f for f in r.faults if not f.survived]
        r.checks = [
            Check(f"{n}: every instance acknowledged", r.acked == r.instances, f"{r.acked} of {r.instances}"),
            check,
            Check(f"{n}: one instance row per SOP Instance UID", r.duplicates == 0,
                  f"{r.duplicates} duplicate row(s) over {len(summary.duplicates)} SOP UID(s)"),
            Check(f"{n}: no row that was never sent", not strangers, f"{len(strangers)} unknown SOP UID(s)"),
            Check(f"{n}: series_related_instances equals the instance rows of each series",
                  not summary.series_mismatches,
                  f"{len(summary.series_mismatches)} of {summary.series_rows} series differ"
                  + (f" (e.g. {summary.series_mismatches[0]})" if summary.series_mismatches else "")),
            Check(f"{n}: no good instance in the DLQ", r.good_dead_lettered == 0,
                  f"{r.good_dead_lettered} good of {r.dead_lettered} dead letter(s)"),
            Check(f"{n}: consumer exited only when killed or told to", not consumer_crashes,
                  "; ".join(f"exit {e.returncode} at {e.at_s:.0f} s" for e in consumer_crashes) or "no unexpected exit"),
            Check(f"{n}: receiver exited only when killed or told to", not receiver_crashes,
                  "; ".join(f"exit {e.returncode} at {e.at_s:.0f} s" for e in receiver_crashes) or "no unexpected exit"),
            Check(f"{n}: every fault survived", not failed_faults,
                  "; ".join(f"{f.kind} at {f.injected_s or 0:.0f} s: {f.error or 'no progress after restart'}"
                            for f in failed_faults) or f"{len(r.faults)} of {len(r.faults)}"),
            Check(f"{n}: consumer stopped cleanly on SIGTERM", r.exit_codes.get("consumer") == 0,
                  f"exit code {r.exit_codes.get('consumer')}"),
        ]


__all__ = ["KINDS", "Fault", "FaultKind", "FaultRun", "FaultRunResult", "Sample", "plan"]
