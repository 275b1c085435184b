"""The failover phase: a C-STORE load against a three-broker cluster while brokers die.

Topics are created with replication factor 3 and ``min.insync.replicas`` 2
(the defaults ``topics create`` derives on three brokers). While the sender
stores instances through ``dicomflow scp`` and ``dicomflow consume`` indexes
them:

1. **leader kill**: once the load is warm (three seconds' worth of
   acknowledgements, or a quarter of a small load), the node leading the busiest
   partition of ``storage_queue`` is SIGKILLed (its broker and its controller
   vote at once) and restarted a few seconds later. The other two keep the
   ISR at 2: writes go on once the partitions are led elsewhere. Figure: the
   longest pause between two acknowledgements from the kill on (target
   <= 15 s).
2. **below min ISR** (unless ``outage_s`` is 0): once the load runs again
   (at 60 % at the latest), two nodes are SIGKILLed together and kept
   down for longer than the receiver's publish timeout. No write can be
   acknowledged (and the quorum is lost too), so the receiver must answer
   failure statuses and the sender retries; after both restart, the retries
   land. Figure: the time from the restart to the next acknowledgement.

Then every instance the sender saw acknowledged must be in PostgreSQL once
and must have its store event in ``storage_queue``: a Success answered for
an instance that never reached Kafka fails the phase.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from dicomflow_faults.checks import Check, read_rows, subset_check, wait_drained
from dicomflow_faults.instances import generate
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.scenario import _wait_listening
from dicomflow_faults.sender import StoreSender
from dicomflow_faults.supervisor import Component, Exit, Supervisor, component_env

log = logging.getLogger(__name__)


@dataclass
class FailoverResult:
    """Figures and verdicts of the failover phase."""

    instances: int
    acked: int = 0
    lost: int = 0
    duplicates: int = 0
    #: Acknowledged instances whose store event is not in storage_queue (must be 0).
    acked_not_in_kafka: int = 0
    leader_node: int | None = None
    leader_partition: int | None = None
    leader_down_s: float = 0.0
    #: Instances acknowledged when the leader was killed (0 < it < instances: the kill hit a running load).
    leader_kill_acked: int = 0
    #: Longest gap between two acknowledgements from the leader kill until the load ended.
    leader_pause_s: float | None = None
    outage_nodes: tuple[int, ...] = ()
    outage_s: float = 0.0
    #: Attempts answered with a failure status (or aborted) while two nodes were down.
    outage_failures: int = 0
    #: From the restart of the two nodes to the next acknowledgement.
    recovery_s: float | None = None
    send_s: float = 0.0
    crashes: list[Exit] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)


class _Sop(msgspec.Struct):
    sop_uid: str | None = None


def _kafka_sop_uids(stack: PrivateStack, topic: str) -> set[str]:
    """SOP Instance UIDs of every store event in ``topic`` (read back from the cluster)."""
    from dicomflow.kafka.reader import read_all

    decoder = msgspec.json.Decoder(_Sop)
    out: set[str] = set()
    for record in read_all(stack.settings.kafka, topic, timeout_s=120.0):
        try:
            uid = decoder.decode(record.value or b"").sop_uid
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if uid:
            out.add(uid)
    return out


def _longest_gap(times: list[float], since: float, until: float) -> float:
    """Longest time without an acknowledgement in [since, until] (the edges count as boundaries)."""
    inside = [t for t in times if since <= t <= until]
    points = [since, *inside, until]
    return max(b - a for a, b in itertools.pairwise(points))


class FailoverRun:
    """Drives the failover phase on a private three-node cluster; :meth:`run` returns the result."""

    def __init__(self, stack: PrivateStack, instances: int, *, seed: int, log_dir: Path, rate: float = 40.0,
                 associations: int = 4, leader_down_s: float = 5.0, outage_s: float = 15.0,
                 pause_target_s: float = 15.0) -> None:
        self.stack = stack
        self.instances = instances
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        self.associations = associations
        self.leader_down_s = leader_down_s
        self.pause_target_s = pause_target_s
        self.result = FailoverResult(instances, outage_s=outage_s)
        self.phase = stack.new_phase("failover", partitions=6)
        self.supervisor = Supervisor(restart_crashed=True)
        env = component_env(self.phase.env())
        self.receiver = self.supervisor.add(Component("failover-receiver", ["scp"], env, log_dir, cwd=log_dir))
        self.consumer = self.supervisor.add(Component("failover-consumer", ["consume"], env, log_dir, cwd=log_dir))

    def run(self) -> FailoverResult:
        """Generate, start the components, send through both faults, wait, check.

        Raises:
            StackError: a component or a node could not be started at all.
        """
        r = self.result
        generated = generate(self.stack.phase_dir(self.phase) / "outbox", self.instances, seed=self.seed,
                             worker_node_id="failover-sender")
        files = [(i.sop_uid, i.path) for i in generated.instances]
        self.rng.shuffle(files)
        port = self.phase.settings.receiver.port
        sender = StoreSender("127.0.0.1", port, self.phase.settings.receiver.ae_title, files,
                             associations=self.associations, rate=self.rate)
        self.supervisor.start_watching()
        try:
            self.consumer.start()
            self.receiver.start()
            _wait_listening(self.receiver, port, 60.0)
            started = time.monotonic()
            sender.start()
            try:
                t_kill = self._leader_kill(sender)
                if self.result.outage_s > 0:
                    self._below_min_isr(sender)
                self._wait_sent(sender, timeout_s=max(240.0, self.instances / 10.0))
            finally:
                sender.stop()
            r.send_s = time.monotonic() - started
            r.acked = sender.acked_count()
            times = sender.ack_times()
            if t_kill is not None:
                end = self._outage_start if self._outage_start is not None else (times[-1] if times else t_kill)
                r.leader_pause_s = _longest_gap(times, t_kill, end)
            self._catch_up(sender.acknowledged())
        finally:
            self.supervisor.stop_watching()
            self.consumer.terminate(timeout_s=60.0)
            self.receiver.terminate(timeout_s=60.0)
            r.crashes = self.supervisor.crashes()
        self._check(sender.acknowledged(), generated.sop_uids)
        return r

    _outage_start: float | None = None

    # ------------------------------------------------------------------ faults

    def _wait_acked(self, sender: StoreSender, count: int, stall_s: float = 120.0) -> None:
        seen, progress_at = -1, time.monotonic()
        while sender.acked_count() < count and not sender.wait(0.1):
            if sender.acked_count() > seen:
                seen, progress_at = sender.acked_count(), time.monotonic()
            elif time.monotonic() - progress_at > stall_s:
                log.error("failover: no acknowledgement for %.0f s", stall_s)
                return

    def _leader_kill(self, sender: StoreSender) -> float | None:
        r = self.result
        # Once the load is warm (three seconds' worth, a quarter of a small load): the rest of the
        # load is what must outlast both faults, so it is not spent before the first one.
        self._wait_acked(sender, min(self.instances // 4, int(3 * self.rate)))
        node, partition = self.stack.leader_of_busiest(self.phase.settings.topics.main)
        r.leader_node, r.leader_partition = node, partition
        t_kill = time.monotonic()
        r.leader_kill_acked = sender.acked_count()
        log.warning("failover: SIGKILL Kafka node %d, leader of %s[%d] (%d acknowledged)",
                    node, self.phase.settings.topics.main, partition, sender.acked_count())
        self.stack.kill_node(node)
        time.sleep(self.leader_down_s)
        self.stack.start_nodes()
        r.leader_down_s = time.monotonic() - t_kill
        log.warning("failover: node %d back after %.1f s", node, r.leader_down_s)
        return t_kill

    def _below_min_isr(self, sender: StoreSender) -> None:
        r = self.result
        # As soon as the load runs again after the leader's restart (a node restart takes a while:
        # a small load may otherwise end before two nodes ever went down).
        self._wait_acked(sender, min(int(self.instances * 0.6), sender.acked_count() + max(10, int(2 * self.rate))))
        if sender.wait(0):
            log.error("failover: the load ended before two nodes could be stopped; send more or slower")
            return
        victims = tuple(sorted(self.rng.sample([n.node_id for n in self.stack.stack.kafka.nodes], 2)))
        r.outage_nodes = victims
        failures_before = sender.failure_count()
        self._outage_start = time.monotonic()
        log.warning("failover: SIGKILL Kafka nodes %s together for %.0f s (below min ISR; %d acknowledged)",
                    victims, r.outage_s, sender.acked_count())
        for node in victims:
            self.stack.kill_node(node)
        time.sleep(r.outage_s)
        acked_at_restart = sender.acked_count()
        t_restart = time.monotonic()
        self.stack.start_nodes()
        while sender.acked_count() == acked_at_restart and not sender.wait(0.05):
            if time.monotonic() - t_restart > 180:
                log.error("failover: no acknowledgement within 180 s of the restart")
                return
        r.recovery_s = time.monotonic() - t_restart
        # Failure answers to stores begun while the nodes were down arrive up to a publish timeout later.
        r.outage_failures = sender.failure_count() - failures_before
        log.warning("failover: nodes %s restarted; acknowledgements again after %.1f s", victims, r.recovery_s)

    @staticmethod
    def _wait_sent(sender: StoreSender, timeout_s: float, stall_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        seen, progress_at = -1, time.monotonic()
        while not sender.wait(1.0):
            if sender.acked_count() > seen:
                seen, progress_at = sender.acked_count(), time.monotonic()
            if time.monotonic() > deadline or time.monotonic() - progress_at > stall_s:
                log.error("failover: %d of %d acknowledged; the sender gives up", sender.acked_count(), sender.total)
                return

    def _catch_up(self, acked: set[str], timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if acked <= read_rows(self.phase.settings.database).sop_uids:
                    break
            except Exception:  # noqa: BLE001 - retried until the deadline
                pass
            time.sleep(1.0)
        wait_drained(self.phase.settings.kafka, self.phase.settings.topics, max(deadline - time.monotonic(), 10.0))

    # ------------------------------------------------------------------ verdict

    def _check(self, acked: set[str], ours: set[str]) -> None:
        r = self.result
        summary = read_rows(self.phase.settings.database)
        in_kafka = _kafka_sop_uids(self.stack, self.phase.settings.topics.main)
        check, missing = subset_check("failover: every acknowledged instance is in PostgreSQL", acked, summary.sop_uids)
        r.lost = len(missing)
        r.duplicates = summary.duplicate_rows
        not_in_kafka = acked - in_kafka
        r.acked_not_in_kafka = len(not_in_kafka)
        pause = r.leader_pause_s
        r.checks = [
            Check("failover: every instance acknowledged", r.acked == r.instances, f"{r.acked} of {r.instances}"),
            check,
            Check("failover: no Success for an instance whose store event is not in Kafka", not not_in_kafka,
                  f"{len(not_in_kafka)} acknowledged but not in {self.phase.settings.topics.main}"
                  + (f" (e.g. {sorted(not_in_kafka)[0]})" if not_in_kafka else "")),
            Check("failover: one instance row per SOP Instance UID", r.duplicates == 0,
                  f"{r.duplicates} duplicate row(s)"),
            Check("failover: no row that was never sent", summary.sop_uids <= ours,
                  f"{len(summary.sop_uids - ours)} unknown SOP UID(s)"),
            Check(f"failover: acknowledgements paused <= {self.pause_target_s:g} s after the leader kill",
                  pause is not None and pause <= self.pause_target_s,
                  "not measured" if pause is None else f"longest pause {pause:.1f} s (node {r.leader_node})"),
        ]
        if r.outage_s > 0:
            r.checks += [
                Check("failover: below min ISR the receiver answered failure statuses", r.outage_failures > 0,
                      f"{r.outage_failures} failure answer(s) while nodes {r.outage_nodes} were down"),
                Check("failover: acknowledgements resumed after the restart", r.recovery_s is not None,
                      "never" if r.recovery_s is None else f"after {r.recovery_s:.1f} s"),
            ]
        r.checks += [
            Check("failover: receiver and consumer exited only when told", not r.crashes,
                  "; ".join(f"{e.component} exit {e.returncode} at {e.at_s:.0f} s" for e in r.crashes)
                  or "no unexpected exit"),
        ]


def run_failover(instances: int, *, seed: int, log_dir: Path, base: Path | None, rate: float,
                 pause_target_s: float = 15.0, outage_s: float = 15.0, cache: Path | None = None) -> FailoverResult:
    """Start a private three-node cluster (and PostgreSQL), run the phase, remove everything.

    Raises:
        StackError: the private cluster would not start.
    """
    with PrivateStack(base=base, cache=cache, kafka_heap_mb=384, brokers=3) as stack:
        try:
            t0 = time.monotonic()
            stack.up()
            log.info("failover: private three-node cluster up in %.1f s", time.monotonic() - t0)
            return FailoverRun(stack, instances, seed=seed, log_dir=log_dir, rate=rate,
                               pause_target_s=pause_target_s, outage_s=outage_s).run()
        finally:  # the nodes' logs outlive the stack, a failed start too (the caller removes them when all passed)
            for node in stack.stack.kafka.nodes:
                for name in ("server.log", "stdout.log"):
                    src = node.home / name
                    if src.exists():
                        (log_dir / f"kafka-{node.node_id}-{name}").write_bytes(src.read_bytes())


__all__ = ["FailoverResult", "FailoverRun", "run_failover"]
