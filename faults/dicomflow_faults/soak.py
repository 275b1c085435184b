"""The soak: >= 100,000 store events through one consumer, whose memory must stay flat.

Every event is a distinct instance (its own small file under the storage
root), so the consumer does the real work per event: decode, parse the
header in its worker pool, upsert three tables, publish the derived events,
commit. The events are published up front; the consumer drains them and
exits by itself once idle (``--until-idle``).

The consumer's resident memory (``VmRSS`` of the main process, and of the
whole process tree with the parse workers) is sampled together with the
number of instance rows in PostgreSQL. *Flat* means: from the end of the
warm-up (the first ``warmup`` fraction of the events) to the end of the run,
the RSS grows by less than ``bound_mib``. A leak of a few hundred bytes per
event shows up as tens of MiB over 100,000 events.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow_faults.checks import Check, RowCounter, read_dead_letters, read_rows, subset_check
from dicomflow_faults.instances import generate
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.supervisor import Component, Supervisor, component_env

log = logging.getLogger(__name__)

#: Events published per producer call.
_PUBLISH_CHUNK = 20000


@dataclass(frozen=True)
class RssSample:
    """One look at the consumer: seconds since it started, rows so far, RSS in KiB."""

    t_s: float
    rows: int | None
    main_kib: int
    tree_kib: int


@dataclass
class SoakResult:
    """Figures and verdicts of the soak."""

    events: int
    rows: int = 0
    generate_s: float = 0.0
    publish_s: float = 0.0
    consume_s: float = 0.0
    samples: list[RssSample] = field(default_factory=list)
    bound_mib: float = 50.0
    warmup: float = 0.2
    baseline_main_kib: int = 0
    end_main_kib: int = 0
    baseline_tree_kib: int = 0
    end_tree_kib: int = 0
    lost: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    exit_code: int | None = None
    #: True when the consumer ended by itself once idle (not stopped by the suite).
    went_idle: bool = False
    crashes: int = 0
    checks: list[Check] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Events per second the consumer held, from its start to its last row."""
        return self.rows / self.consume_s if self.consume_s else 0.0

    @property
    def growth_main_mib(self) -> float:
        return (self.end_main_kib - self.baseline_main_kib) / 1024

    @property
    def growth_tree_mib(self) -> float:
        return (self.end_tree_kib - self.baseline_tree_kib) / 1024


def flatness(samples: list[RssSample], events: int, warmup: float) -> tuple[int, int, int, int]:
    """(baseline main, end main, baseline tree, end tree) RSS in KiB.

    Baseline: the median of the first three samples taken once ``warmup`` of
    the events are in PostgreSQL. End: the median of the last three samples
    up to the one that saw the last event indexed (later ones show an idle
    consumer, not one under load). Medians, so one sample caught in the
    middle of a garbage collection or a batch does not decide the verdict.
    With no sample past the warm-up (a tiny run), the whole series is used.
    """
    if not samples:
        return 0, 0, 0, 0
    done = next((i for i, s in enumerate(samples) if s.rows is not None and s.rows >= events), len(samples) - 1)
    loaded = samples[: done + 1]
    past = [s for s in loaded if s.rows is not None and s.rows >= warmup * events] or loaded
    head, tail = past[:3], past[-3:]
    return (
        int(statistics.median(s.main_kib for s in head)),
        int(statistics.median(s.main_kib for s in tail)),
        int(statistics.median(s.tree_kib for s in head)),
        int(statistics.median(s.tree_kib for s in tail)),
    )


def run_soak(
    stack: PrivateStack,
    events: int,
    *,
    seed: int,
    log_dir: Path,
    bound_mib: float = 50.0,
    warmup: float = 0.2,
    sample_every_s: float = 0.5,
    timeout_s: float | None = None,
    stall_s: float = 90.0,
) -> SoakResult:
    """Publish ``events`` distinct store events, drain them with one consumer, sample its RSS.

    Raises:
        dicomflow.errors.PublishError: the events could not be published.
        dicomflow.errors.StackError: the phase's database could not be set up.
    """
    from dicomflow.kafka.producer import Publisher

    result = SoakResult(events=events, bound_mib=bound_mib, warmup=warmup)
    phase = stack.new_phase("soak")
    t0 = time.monotonic()
    generated = generate(phase.settings.storage.root, events, seed=seed, worker_node_id="faults-soak")
    result.generate_s = time.monotonic() - t0
    log.info("soak: %d files written in %.1f s", events, result.generate_s)

    t0 = time.monotonic()
    with Publisher(phase.settings.kafka, phase.settings.topics, client_id="faults-soak") as publisher:
        batch = [i.event for i in generated.instances]
        for start in range(0, len(batch), _PUBLISH_CHUNK):
            publisher.send_store_events(batch[start:start + _PUBLISH_CHUNK], with_receipt=False).raise_for_failures()
    result.publish_s = time.monotonic() - t0
    log.info("soak: %d store events published in %.1f s", events, result.publish_s)

    supervisor = Supervisor(restart_crashed=True)
    consumer = supervisor.add(Component(
        "soak-consumer", ["consume", "--until-idle", "5"], component_env(phase.env()), log_dir, cwd=log_dir,
        finite=True))
    limit = timeout_s if timeout_s is not None else 120.0 + events / 100.0
    started = time.monotonic()
    consumer.start()
    supervisor.start_watching()
    last_rows_at = started
    rows_seen = 0
    counter = RowCounter(phase.settings.database)
    try:
        while time.monotonic() - started < limit:
            code = consumer.wait(sample_every_s)
            if code is not None:
                result.exit_code = code
                result.went_idle = code == 0
                break
            rss = consumer.rss_kib()
            rows = counter.count()
            if rows is not None and rows > rows_seen:
                rows_seen, last_rows_at = rows, time.monotonic()
            if rss is not None:
                result.samples.append(RssSample(time.monotonic() - started, rows, rss[0], rss[1]))
            if time.monotonic() - last_rows_at > stall_s:
                log.error("soak: no new instance row for %.0f s (%d of %d); stopping the consumer",
                          stall_s, rows_seen, events)
                break
        else:
            log.error("soak: the consumer did not finish within %.0f s", limit)
    finally:
        counter.close()
        supervisor.stop_watching()
        if consumer.alive():
            result.exit_code = consumer.terminate()
    result.consume_s = max(last_rows_at - started, 1e-9)
    result.crashes = len(supervisor.crashes())

    summary = read_rows(phase.settings.database)
    result.rows = len(summary.sop_uids & generated.sop_uids)
    check, missing = subset_check("soak: every store event has its instance row", generated.sop_uids, summary.sop_uids)
    result.lost = len(missing)
    result.duplicates = summary.duplicate_rows
    dead = read_dead_letters(phase.settings.kafka, phase.settings.topics.dlq)
    result.dead_lettered = len(dead)
    (result.baseline_main_kib, result.end_main_kib,
     result.baseline_tree_kib, result.end_tree_kib) = flatness(result.samples, events, warmup)
    result.checks = [
        check,
        Check("soak: no duplicate instance rows", result.duplicates == 0, f"{result.duplicates} duplicate row(s)"),
        Check("soak: series_related_instances matches the rows", not summary.series_mismatches,
              f"{len(summary.series_mismatches)} series differ"),
        Check("soak: nothing dead-lettered", not dead, f"{len(dead)} dead letter(s)"),
        Check("soak: consumer never crashed and went idle by itself",
              result.crashes == 0 and result.went_idle,
              f"{result.crashes} unexpected exit(s), exit code {result.exit_code}"
              + ("" if result.went_idle else " after the suite stopped it")),
        Check("soak: consumer RSS flat (main process)", result.growth_main_mib < bound_mib,
              f"{result.baseline_main_kib / 1024:.1f} -> {result.end_main_kib / 1024:.1f} MiB "
              f"({result.growth_main_mib:+.1f} MiB, bound {bound_mib:g} MiB)"),
        Check("soak: consumer RSS flat (with parse workers)", result.growth_tree_mib < bound_mib,
              f"{result.baseline_tree_kib / 1024:.1f} -> {result.end_tree_kib / 1024:.1f} MiB "
              f"({result.growth_tree_mib:+.1f} MiB, bound {bound_mib:g} MiB)"),
        Check("soak: enough RSS samples past the warm-up", len(result.samples) >= 3, f"{len(result.samples)} sample(s)"),
    ]
    return result


__all__ = ["RssSample", "SoakResult", "flatness", "run_soak"]
