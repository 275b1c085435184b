"""The suite's final figures: printed for a reader, and as JSON for CI.

The headline figures are the ones the issue asks for: load held, faults
injected and survived per kind, bad inputs tried, messages lost (must be 0)
and duplicates (must be 0). Every check of every phase follows, then the
verdict. :attr:`SuiteReport.passed` decides the exit code.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, TextIO

from dicomflow_faults.checks import Check
from dicomflow_faults.failover import FailoverResult
from dicomflow_faults.fuzz import FuzzResult, Kind
from dicomflow_faults.protofuzz import ProtocolFuzzResult
from dicomflow_faults.scenario import KINDS, FaultRunResult
from dicomflow_faults.soak import SoakResult
from dicomflow_faults.warehouse import WarehouseFaultResult
from dicomflow_faults.webfuzz import WebFuzzResult
from dicomflow_faults.webfuzz import verdict as webfuzz
from dicomflow_faults.webrun import WebFaultResult


@dataclass
class SuiteReport:
    """Everything one run of the suite measured."""

    seed: int
    options: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)
    faults: FaultRunResult | None = None
    soak: SoakResult | None = None
    fuzz: FuzzResult | None = None
    protocol: ProtocolFuzzResult | None = None
    warehouse: WarehouseFaultResult | None = None
    failover: FailoverResult | None = None
    #: The fault run on the s3 backend, S3Proxy killed mid-run (:mod:`.s3run`).
    s3: FaultRunResult | None = None
    #: The fault run with receiver.ack = "journal", the receiver SIGKILLed mid-run (:mod:`.journalrun`).
    journal: FaultRunResult | None = None
    #: The web fuzz phase (:mod:`.webfuzz`).
    web_fuzz: WebFuzzResult | None = None
    #: DICOMweb load while PostgreSQL is SIGKILLed (:mod:`.webrun`).
    web: WebFaultResult | None = None
    errors: list[str] = field(default_factory=list)
    log_dir: str | None = None

    # ------------------------------------------------------------------ headline figures

    @property
    def lost(self) -> int:
        return sum(x.lost for x in (self.faults, self.soak, self.fuzz, self.warehouse, self.failover, self.s3,
                                    self.journal, self.web_fuzz) if x is not None)

    @property
    def duplicates(self) -> int:
        return sum(x.duplicates for x in (self.faults, self.soak, self.warehouse, self.failover, self.s3, self.journal)
                   if x is not None)

    @property
    def checks(self) -> list[Check]:
        out: list[Check] = []
        for part in (self.faults, self.soak, self.fuzz, self.protocol, self.warehouse, self.failover, self.s3,
                     self.journal, self.web_fuzz, self.web):
            if part is not None:
                out.extend(part.checks)
        return out

    @property
    def passed(self) -> bool:
        return not self.errors and self.lost == 0 and self.duplicates == 0 and all(c.ok for c in self.checks)

    def faults_by_kind(self) -> dict[str, tuple[int, int]]:
        """kind -> (injected, survived)."""
        out: dict[str, tuple[int, int]] = {}
        if self.faults is None:
            return out
        for kind in KINDS:
            mine = [f for f in self.faults.faults if f.kind == kind]
            if mine:
                out[kind] = (sum(f.injected_s is not None for f in mine), sum(f.survived for f in mine))
        return out

    # ------------------------------------------------------------------ output

    def print(self, out: TextIO) -> None:
        """The human-readable report."""
        w = out.write
        w("\n" + "=" * 78 + "\n")
        w(f"dicomflow fault-injection suite  (seed {self.seed}, {platform.node()}, "
          f"{_cpus()} CPU(s), Python {platform.python_version()})\n")
        w("=" * 78 + "\n")
        self._print_timings(w)
        if self.faults is not None:
            self._print_faults(w, self.faults)
        if self.soak is not None:
            self._print_soak(w, self.soak)
        if self.fuzz is not None:
            self._print_fuzz(w, self.fuzz)
        if self.protocol is not None:
            self._print_protocol(w, self.protocol)
        if self.warehouse is not None:
            self._print_warehouse(w, self.warehouse)
        if self.failover is not None:
            self._print_failover(w, self.failover)
        if self.s3 is not None:
            self._print_faults(w, self.s3, "S3 fault run (storage.backend = s3, S3Proxy SIGKILLed)")
        if self.journal is not None:
            self._print_faults(w, self.journal, "Journal run (receiver.ack = journal, receiver SIGKILLed)")
        if self.web_fuzz is not None:
            webfuzz.print_web_fuzz(w, self.web_fuzz)
        if self.web is not None:
            self._print_web(w, self.web)
        w("\nChecks\n")
        for c in self.checks:
            w(f"  {'PASS' if c.ok else 'FAIL'}  {c.name}: {c.detail}\n")
        for e in self.errors:
            w(f"  FAIL  {e}\n")
        w("\n")
        if self.faults is not None:
            w(f"Load held:          {self.faults.load_rate:.1f} instances/s (C-STORE, acknowledged, faults included)\n")
        by_kind = self.faults_by_kind()
        if by_kind:
            injected = sum(i for i, _ in by_kind.values())
            survived = sum(s for _, s in by_kind.values())
            detail = ", ".join(f"{k} {i}/{s}" for k, (i, s) in by_kind.items())
            w(f"Faults:             {injected} injected, {survived} survived ({detail}; injected/survived)\n")
        if self.warehouse is not None:
            wh = self.warehouse
            w(f"Warehouse sink:     {len(wh.kills)} SIGKILLs mid-run over {wh.events} events, "
              f"{wh.lost} lost, {wh.duplicates} duplicated\n")
        if self.fuzz is not None:
            w(f"Bad inputs tried:   {self.fuzz.bad_inputs}\n")
        if self.protocol is not None:
            w(f"PDU sequences:      {self.protocol.sequences} mutated, {self.protocol.unexpected} unexpected "
              f"exception(s), {self.protocol.crashes} receiver crash(es) (both must be 0)\n")
        if self.web_fuzz is not None:
            w(f"HTTP requests:      {webfuzz.headline(self.web_fuzz)}\n")
        if self.s3 is not None:
            kills = [f for f in self.s3.faults if f.kind == "s3proxy"]
            refused = sum(self.s3.send.failures.values()) if self.s3.send else 0
            w(f"S3 run:             {sum(f.survived for f in kills)}/{len(kills)} S3Proxy SIGKILLs survived, "
              f"{self.s3.load_rate:.1f} instances/s held, {refused} C-STORE(s) refused and retried, "
              f"{self.s3.lost} lost\n")
        if self.journal is not None:
            kills = [f for f in self.journal.faults if f.kind == "receiver"]
            w(f"Journal run:        {sum(f.survived for f in kills)}/{len(kills)} receiver SIGKILLs survived, "
              f"{self.journal.load_rate:.1f} instances/s held, {self.journal.acked} acknowledged, "
              f"{self.journal.lost} lost\n")
        if self.failover is not None:
            f = self.failover
            pause = "-" if f.leader_pause_s is None else f"{f.leader_pause_s:.1f} s"
            recovery = "-" if f.recovery_s is None else f"{f.recovery_s:.1f} s"
            w(f"Failover:           longest ack pause after the leader kill {pause} (target <= 15 s), "
              f"recovery after the restart below min ISR {recovery}, Success not in Kafka {f.acked_not_in_kafka}\n")
        if self.web is not None and self.web.figures is not None:
            wf = self.web.figures
            slowest = "-" if wf.slowest_down_s is None else f"{wf.slowest_down_s:.2f} s"
            recovery = "none" if wf.longest_recovery_s is None else f"{wf.longest_recovery_s:.2f} s"
            w(f"Web tier:           {wf.total} requests over {len(wf.outages)} PostgreSQL SIGKILL(s); "
              f"5xx other than 503 {wf.bad_5xx}, 503 without Retry-After {wf.no_retry_after} (both must be 0); "
              f"slowest answer while down {slowest}; longest recovery {recovery} "
              f"(target <= {self.web.recovery_target_s:g} s); tracebacks {self.web.tracebacks} (must be 0)\n")
        w(f"Messages lost:      {self.lost} (must be 0)\n")
        w(f"Duplicates:         {self.duplicates} (must be 0)\n")
        if self.log_dir:
            w(f"Component logs:     {self.log_dir}\n")
        w(f"RESULT: {'PASS' if self.passed else 'FAIL'}\n")

    def _print_timings(self, w: Any) -> None:
        w("\nTimings\n")
        for name, seconds in self.timings.items():
            w(f"  {name:<22} {seconds:8.1f} s\n")

    @staticmethod
    def _print_faults(w: Any, r: FaultRunResult, title: str = "Fault run") -> None:
        w(f"\n{title}: {r.instances} instances generated in {r.generate_s:.1f} s, {r.acked} acknowledged\n")
        if r.send is not None:
            failures = ", ".join(f"{k}: {v}" for k, v in r.send.failures.most_common()) or "none"
            w(f"  load held {r.load_rate:.1f} instances/s over {r.send.seconds:.1f} s; "
              f"{r.send.attempts} C-STOREs on {r.send.associations} associations; retries: {failures}\n")
        w(f"  consumer caught up {r.catch_up_s:.1f} s after the last acknowledgement; "
          f"{r.stored_unacknowledged} instance(s) indexed but never acknowledged (retried after a lost answer)\n")
        w(f"  dead letters: {r.dead_lettered} ({r.good_dead_lettered} of them good instances)\n")
        w(f"  {'#':>3} {'kind':<9} {'at ack':>7} {'at s':>7} {'down s':>7} {'back s':>7}  outcome\n")
        for i, f in enumerate(r.faults, 1):
            at = f"{f.injected_s:7.1f}" if f.injected_s is not None else "      -"
            back = f"{f.back_s:7.1f}" if f.back_s is not None else "      -"
            outcome = "survived" if f.survived else f"FAILED ({f.error or 'no progress after restart'})"
            when = "" if f.during_load else " (after the load)"
            w(f"  {i:>3} {f.kind:<9} {f.at_acked:>7} {at} {f.down_s:7.1f} {back}  {outcome}{when}\n")
        for e in r.crashes:
            w(f"  unexpected exit: {e.component} PID {e.pid} code {e.returncode} at {e.at_s:.1f} s\n")
            for line in e.log_tail.splitlines()[-8:]:
                w(f"      | {line}\n")

    @staticmethod
    def _print_soak(w: Any, r: SoakResult) -> None:
        w(f"\nSoak: {r.events} store events (files written in {r.generate_s:.1f} s, published in {r.publish_s:.1f} s), "
          f"{r.rows} indexed by one consumer in {r.consume_s:.1f} s = {r.rate:.0f} events/s\n")
        w(f"  RSS after the first {r.warmup:.0%} of the events -> at the end: main "
          f"{r.baseline_main_kib / 1024:.1f} -> {r.end_main_kib / 1024:.1f} MiB ({r.growth_main_mib:+.1f}), "
          f"with parse workers {r.baseline_tree_kib / 1024:.1f} -> {r.end_tree_kib / 1024:.1f} MiB "
          f"({r.growth_tree_mib:+.1f}); flat = growth < {r.bound_mib:g} MiB\n")
        w(f"  {'t s':>7} {'rows':>8} {'main MiB':>9} {'tree MiB':>9}\n")
        step = max(1, len(r.samples) // 12)
        shown = r.samples[::step]
        if r.samples and shown[-1] is not r.samples[-1]:
            shown.append(r.samples[-1])
        for s in shown:
            rows = "-" if s.rows is None else str(s.rows)
            w(f"  {s.t_s:7.1f} {rows:>8} {s.main_kib / 1024:9.1f} {s.tree_kib / 1024:9.1f}\n")

    @staticmethod
    def _print_fuzz(w: Any, r: FuzzResult) -> None:
        kinds: tuple[Kind, ...] = ("payload", "file", "special", "control")
        w(f"\nFuzz: {r.bad_inputs} bad inputs + {r.count(('control',))} good controls, drained in {r.seconds:.1f} s\n")
        w(f"  {'input':<10} {'tried':>6} {'DLQ':>6} {'indexed':>8} {'stuck':>6} {'lost':>6}\n")
        for kind in kinds:
            w(f"  {kind:<10} {r.count((kind,)):>6} {r.count((kind,), 'dead-lettered'):>6} "
              f"{r.count((kind,), 'persisted'):>8} {r.count((kind,), 'unprocessed'):>6} {r.count((kind,), 'lost'):>6}\n")
        labels = Counter(c.label.split(" ")[0] for c in r.cases if c.kind in ("payload", "file"))
        w("  families: " + ", ".join(f"{k} {v}" for k, v in labels.most_common()) + "\n")
        w("  DLQ reasons: " + ", ".join(f"{k} {v}" for k, v in r.error_classes().most_common()) + "\n")

    @staticmethod
    def _print_protocol(w: Any, r: ProtocolFuzzResult) -> None:
        w(f"\nProtocol fuzz: {r.sequences} mutated PDU sequences in {r.seconds:.1f} s\n")
        w("  families: " + ", ".join(f"{k} {v}" for k, v in sorted(r.families.items())) + "\n")
        w("  answers: " + ", ".join(f"{k} {v}" for k, v in r.answers.most_common()) + "\n")
        w(f"  unexpected exceptions: {r.unexpected}; receiver crashes: {r.crashes}; "
          f"RSS {r.rss_before_kib / 1024:.1f} -> {r.rss_after_kib / 1024:.1f} MiB; "
          f"valid association afterwards: {'stored' if r.control_stored else 'FAILED'}\n")

    @staticmethod
    def _print_warehouse(w: Any, r: WarehouseFaultResult) -> None:
        w(f"\nWarehouse sink: {r.events} messages ({r.instances} instances) published over {r.publish_s:.1f} s, "
          f"all in DuckDB {r.drain_s:.1f} s after the sink's first start, {r.starts} starts\n")
        w(f"  {'#':>3} {'at s':>7} {'committed':>10} {'of':>7}  outcome\n")
        for i, k in enumerate(r.kills, 1):
            w(f"  {i:>3} {k.at_s:7.1f} {k.committed_before:>10} {k.published:>7}  "
              f"{'SIGKILL mid-run, restarted' if k.mid_run else 'NOT mid-run'}\n")
        w("  rows: " + ", ".join(f"{t} {r.rows.get(t, 0)}/{n}" for t, n in r.expected_rows.items())
          + f"; stored offsets {r.stored_offsets}/{r.events}; dead letters {r.dead_lettered}; "
          f"last run exit code {r.exit_code}\n")

    @staticmethod
    def _print_failover(w: Any, r: FailoverResult) -> None:
        w(f"\nFailover (three brokers, RF 3, min ISR 2): {r.instances} instances, {r.acked} acknowledged "
          f"in {r.send_s:.1f} s\n")
        pause = "-" if r.leader_pause_s is None else f"{r.leader_pause_s:.1f} s"
        w(f"  leader kill: node {r.leader_node} (leader of partition {r.leader_partition}, the busiest) "
          f"SIGKILLed, back after {r.leader_down_s:.1f} s; longest acknowledgement pause {pause}\n")
        recovery = "-" if r.recovery_s is None else f"{r.recovery_s:.1f} s"
        if r.outage_s > 0:
            w(f"  below min ISR: nodes {', '.join(map(str, r.outage_nodes)) or '-'} SIGKILLed together for "
              f"{r.outage_s:.0f} s; {r.outage_failures} failure answer(s) to the sender meanwhile; "
              f"acknowledged again {recovery} after the restart\n")
        else:
            w("  below min ISR: not run (--failover-outage 0)\n")
        w(f"  lost {r.lost}, duplicates {r.duplicates}, acknowledged but not in Kafka {r.acked_not_in_kafka}\n")

    @staticmethod
    def _print_web(w: Any, r: WebFaultResult) -> None:
        w(f"\nWeb tier (dicomflow web, PostgreSQL SIGKILLed {r.kills}x): {r.instances} instances in {r.series} "
          f"series indexed in {r.index_s:.1f} s; {r.clients} clients for {r.load_s:.1f} s\n")
        f = r.figures
        if f is None:
            w("  no load figures\n")
            return
        classes = ", ".join(f"{k} {v}" for k, v in sorted(f.by_class.items()))
        w(f"  {f.total} requests ({classes}); by status: "
          + ", ".join(f"{s} {n}" for s, n in f.by_status.items()) + "\n")
        if f.errors:
            w(f"  unanswered: {', '.join(f.errors)}\n")
        w(f"  {'#':>3} {'at s':>7} {'down s':>7} {'asked':>6} {'503':>6} {'slowest s':>10} {'recovery s':>11}\n")
        for i, o in enumerate(f.outages, 1):
            down = "-" if o.down_s is None else f"{o.down_s:.1f}"
            slowest = "-" if o.slowest_s is None else f"{o.slowest_s:.2f}"
            recovery = "none" if o.recovery_s is None else f"{o.recovery_s:.2f}"
            w(f"  {i:>3} {o.at_s:7.1f} {down:>7} {o.requests:>6} {o.answered_503:>6} {slowest:>10} {recovery:>11}\n")
        w("  (down s: SIGKILL to PostgreSQL ready; asked: requests in flight meanwhile; recovery: ready to the first 200)\n")
        w(f"  server log: {r.tracebacks} traceback(s), {r.log_warnings} WARNING and {r.log_errors} ERROR line(s)\n")

    def as_json(self) -> dict[str, Any]:
        """The figures as plain data (``--json``)."""
        data: dict[str, Any] = {
            "seed": self.seed, "options": self.options, "timings_s": self.timings, "passed": self.passed,
            "lost": self.lost, "duplicates": self.duplicates, "errors": self.errors,
            "faults_by_kind": {k: {"injected": i, "survived": s} for k, (i, s) in self.faults_by_kind().items()},
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in self.checks],
        }
        for key, f in (("fault_run", self.faults), ("s3_run", self.s3), ("journal_run", self.journal)):
            if f is None:
                continue
            data[key] = {
                "instances": f.instances, "acknowledged": f.acked, "load_instances_per_s": round(f.load_rate, 1),
                "lost": f.lost, "duplicates": f.duplicates, "dead_lettered": f.dead_lettered,
                "good_dead_lettered": f.good_dead_lettered, "crashes": len(f.crashes),
                "faults": [{"kind": x.kind, "at_s": x.injected_s, "down_s": x.down_s, "back_s": x.back_s,
                            "survived": x.survived, "during_load": x.during_load, "error": x.error} for x in f.faults],
            }
        if self.failover is not None:
            o = self.failover
            data["failover"] = {
                "instances": o.instances, "acknowledged": o.acked, "lost": o.lost, "duplicates": o.duplicates,
                "acked_not_in_kafka": o.acked_not_in_kafka, "leader_node": o.leader_node,
                "leader_partition": o.leader_partition, "leader_down_s": round(o.leader_down_s, 1),
                "leader_kill_acked": o.leader_kill_acked,
                "leader_pause_s": None if o.leader_pause_s is None else round(o.leader_pause_s, 1),
                "outage_nodes": list(o.outage_nodes), "outage_s": o.outage_s, "outage_failures": o.outage_failures,
                "recovery_s": None if o.recovery_s is None else round(o.recovery_s, 1),
                "send_s": round(o.send_s, 1), "crashes": len(o.crashes),
            }
        if self.soak is not None:
            s = self.soak
            data["soak"] = {
                "events": s.events, "indexed": s.rows, "events_per_s": round(s.rate, 1), "lost": s.lost,
                "duplicates": s.duplicates, "rss_growth_main_mib": round(s.growth_main_mib, 1),
                "rss_growth_tree_mib": round(s.growth_tree_mib, 1), "bound_mib": s.bound_mib,
                "samples": [[round(x.t_s, 1), x.rows, x.main_kib, x.tree_kib] for x in s.samples],
            }
        if self.warehouse is not None:
            h = self.warehouse
            data["warehouse"] = {
                "events": h.events, "instances": h.instances, "kills": len(h.kills),
                "kills_mid_run": sum(k.mid_run for k in h.kills), "starts": h.starts, "lost": h.lost,
                "duplicates": h.duplicates, "rows": h.rows, "expected_rows": h.expected_rows,
                "stored_offsets": h.stored_offsets, "dead_lettered": h.dead_lettered, "exit_code": h.exit_code,
                "publish_s": round(h.publish_s, 1), "drain_s": round(h.drain_s, 1),
                "kill_points": [{"at_s": round(k.at_s, 1), "committed_before": k.committed_before} for k in h.kills],
            }
        if self.fuzz is not None:
            z = self.fuzz
            data["fuzz"] = {
                "bad_inputs": z.bad_inputs, "lost": z.lost, "crashes": z.crashes,
                "dead_lettered": z.count(("payload", "file", "special"), "dead-lettered"),
                "indexed": z.count(("payload", "file", "special"), "persisted"),
                "unprocessed": z.count(("payload", "file", "special", "control"), "unprocessed"),
                "controls": z.count(("control",)), "controls_indexed": z.count(("control",), "persisted"),
                "error_classes": dict(z.error_classes()),
            }
        if self.protocol is not None:
            q = self.protocol
            data["protocol_fuzz"] = {
                "sequences": q.sequences, "families": dict(q.families), "answers": dict(q.answers),
                "unexpected": q.unexpected, "crashes": q.crashes, "rss_before_kib": q.rss_before_kib,
                "rss_after_kib": q.rss_after_kib, "control_stored": q.control_stored, "seconds": round(q.seconds, 1),
            }
        if self.web_fuzz is not None:
            data["web_fuzz"] = webfuzz.as_json(self.web_fuzz)
        if self.web is not None:
            data["web"] = _web_json(self.web)
        return data

    def dumps(self) -> str:
        return json.dumps(self.as_json(), indent=2, default=str)


def _web_json(r: WebFaultResult) -> dict[str, Any]:
    f = r.figures
    data: dict[str, Any] = {
        "seconds": r.seconds, "kills": r.kills, "instances": r.instances, "series": r.series, "clients": r.clients,
        "index_s": round(r.index_s, 1), "load_s": round(r.load_s, 1), "tracebacks": r.tracebacks,
        "log_warnings": r.log_warnings, "log_errors": r.log_errors,
        "crashes": r.crashes, "recovery_target_s": r.recovery_target_s, "down_target_s": r.down_target_s,
        "planned_down_s": list(r.down_s),
    }
    if f is not None:
        data.update({
            "requests": f.total, "by_class": f.by_class, "by_status": {str(k): v for k, v in f.by_status.items()},
            "bad_5xx": f.bad_5xx, "no_retry_after": f.no_retry_after, "unanswered": f.unanswered,
            "empty_ok": f.empty_ok,
            "slowest_down_s": None if f.slowest_down_s is None else round(f.slowest_down_s, 3),
            "longest_recovery_s": None if f.longest_recovery_s is None else round(f.longest_recovery_s, 3),
            "outages": [dataclasses.asdict(o) for o in f.outages],
        })
    return data


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


__all__ = ["SuiteReport"]
