"""The warehouse phase: ``dicomflow warehouse run`` SIGKILLed mid-batch, restarted, counted exactly.

A generated load of valid wire messages on the phase's own log, state, image
and audit topics (:func:`dicomflow.warehouse.synthetic.traffic`: per instance
a receipt and an instance event, per series a state, per study an audit
event) is published in steady steps over ``spread_s`` seconds, so the sink
always has work in hand. The sink runs as its own process, as in production,
over a DuckDB file of the phase. Each time it has committed some progress
(its informational Kafka commit follows the DuckDB commit), it is SIGKILLed
at a random moment, whatever it is doing (collecting, decoding, writing a
batch), and started again. A last run drains the rest and exits by itself
once idle.

Then the DuckDB file must hold every published message exactly once: as many
rows per table as published, the same receipts (by trace_id) and instances (by
SOP Instance UID), no key twice, stored offsets summing to the messages
published, and nothing in the dead-letter topics.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from dicomflow.settings import Settings, to_child_env
from dicomflow_faults.checks import Check
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.supervisor import Component, component_env

log = logging.getLogger(__name__)

#: Publishing steps (each an acknowledged producer call per topic) over the spread.
_PUBLISH_STEPS = 40
#: Topic attributes the sink reads, with the table each feeds.
_TABLES = {"log": "receipts", "dicom_state": "series_states", "dicom_image": "instances", "audit": "audit_events"}


@dataclass(frozen=True)
class SinkKill:
    """One SIGKILL: when (seconds into the phase), and the sink's committed messages just before it."""

    at_s: float
    committed_before: int
    published: int

    @property
    def mid_run(self) -> bool:
        """Killed with some of the load written and some not: the kill landed in the middle of the work."""
        return 0 < self.committed_before < self.published


@dataclass
class WarehouseFaultResult:
    """Figures and verdicts of the warehouse phase."""

    events: int
    kills_wanted: int
    instances: int = 0
    publish_s: float = 0.0
    drain_s: float = 0.0
    kills: list[SinkKill] = field(default_factory=list)
    starts: int = 0
    expected_rows: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    duplicates: int = 0
    stored_offsets: int = 0
    dead_lettered: int = 0
    exit_code: int | None = None
    checks: list[Check] = field(default_factory=list)


def _committed(settings: Settings, timeout_s: float = 5.0) -> int | None:
    """Messages of the four topics the sink's group has committed (0 before its first commit); None if unknown."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    topics = [getattr(settings.topics, attr) for attr in _TABLES]
    consumer = Consumer({"bootstrap.servers": settings.kafka.brokers, "group.id": settings.warehouse.group_id,
                         "enable.auto.commit": False, "log_level": 0})
    try:
        meta = consumer.list_topics(timeout=timeout_s)
        tps = [TopicPartition(t, p) for t in topics for p in (meta.topics[t].partitions if t in meta.topics else ())]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=timeout_s))
    except KafkaException:
        return None
    finally:
        consumer.close()


class _Key(msgspec.Struct):
    trace_id: str | None = None
    sop_uid: str | None = None


def run_warehouse_faults(
    stack: PrivateStack,
    events: int,
    *,
    kills: int,
    seed: int,
    log_dir: Path,
    spread_s: float | None = None,
    timeout_s: float | None = None,
) -> WarehouseFaultResult:
    """Publish about ``events`` messages over ``spread_s`` seconds (default: 7 s per kill), SIGKILL the sink
    ``kills`` times mid-run, restart it, and check the DuckDB file exactly.

    Raises:
        dicomflow.errors.PublishError: the load could not be published.
        dicomflow.errors.StackError: the phase could not be set up.
    """
    import duckdb

    from dicomflow.kafka.producer import Publisher
    from dicomflow.kafka.reader import read_all
    from dicomflow.warehouse.synthetic import traffic

    rng = random.Random(seed)
    result = WarehouseFaultResult(events=events, kills_wanted=kills)
    phase = stack.new_phase("warehouse")
    scratch = stack.phase_dir(phase)
    settings = dataclasses.replace(
        phase.settings,
        # Small batches, so that a kill finds one in hand; no snapshots (nobody reads during the phase).
        warehouse=dataclasses.replace(
            phase.settings.warehouse, path=scratch / "warehouse.duckdb", group_id=f"{phase.settings.topics.consumer_group_id}_wh",
            batch_max_messages=1000, batch_max_ms=200, snapshot_interval_s=0.0, threads=1,
        ),
        # A killed member leaves the group after its session timeout: the broker's minimum, to restart quickly.
        consumer=dataclasses.replace(phase.settings.consumer, session_timeout_ms=6000),
    )
    # Two messages per instance plus one per series (50) and study (200): about 2.025 per instance.
    load = traffic(max(1, round(events / 2.025)), series_size=50, run=rng.randrange(1_000_000_000))
    result.events = load.count()
    result.instances = load.instances
    result.expected_rows = {"receipts": load.instances, "series_states": load.series, "instances": load.instances,
                            "audit_events": load.studies}
    decoder = msgspec.json.Decoder(_Key)
    trace_ids = {decoder.decode(v).trace_id for _, v in load.messages["log"]}
    sop_uids = {decoder.decode(v).sop_uid for _, v in load.messages["dicom_image"]}

    spread = spread_s if spread_s is not None else 7.0 * max(kills, 1)
    publish_errors: list[BaseException] = []

    def publish() -> None:
        t0 = time.monotonic()
        try:
            with Publisher(settings.kafka, settings.topics, client_id="faults-warehouse") as publisher:
                for step in range(_PUBLISH_STEPS):
                    for attr, messages in load.messages.items():
                        size = -(-len(messages) // _PUBLISH_STEPS)
                        chunk = messages[step * size:(step + 1) * size]
                        if chunk:
                            publisher.send_raw(getattr(settings.topics, attr),
                                               [(k, v, None) for k, v in chunk]).raise_for_failures()
                    time.sleep(max(0.0, t0 + spread * (step + 1) / _PUBLISH_STEPS - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - raised on the main thread once the sink is stopped
            publish_errors.append(exc)
        result.publish_s = time.monotonic() - t0
        log.info("warehouse: %d messages (%d instances) published in %.1f s",
                 result.events, load.instances, result.publish_s)

    publisher_thread = threading.Thread(target=publish, name="faults-warehouse-publish", daemon=True)

    env = component_env(to_child_env(settings))
    sink = Component("warehouse-sink", ["warehouse", "run", "--until-idle", "30"], env, log_dir, cwd=scratch, finite=True)
    limit = timeout_s if timeout_s is not None else 120.0 + result.events / 500.0
    started = time.monotonic()
    committed = 0
    publisher_thread.start()
    try:
        for _ in range(kills):
            sink.start()
            # Wait for progress since the last kill (the restart resumed), then kill at a random moment.
            while time.monotonic() - started < limit and sink.alive():
                now = _committed(settings)
                if now is not None and now > committed:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.3))
            before = _committed(settings)
            if not sink.alive() or before is None:
                break  # done already (or Kafka silent): the last run below finishes and the checks tell
            if before >= result.events:
                break  # finished its work before the kill: no mid-run kill left to make
            sink.kill()
            committed = before
            result.kills.append(SinkKill(time.monotonic() - started, before, result.events))
            log.info("warehouse: sink SIGKILLed at %.1f s with %d of %d messages committed",
                     time.monotonic() - started, before, result.events)
        publisher_thread.join()
        sink.args = ["warehouse", "run", "--until-idle", "3"]
        sink.start()
        result.exit_code = sink.wait(max(limit - (time.monotonic() - started), 30.0))
    finally:
        if sink.alive():
            result.exit_code = sink.terminate()
        publisher_thread.join()
    if publish_errors:
        raise publish_errors[0]
    result.drain_s = time.monotonic() - started
    result.starts = sink.starts

    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    try:
        for table in _TABLES.values():
            row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            result.rows[table] = int(row[0]) if row else 0
        got_traces = {str(r[0]) for r in con.execute("SELECT trace_id FROM receipts").fetchall()}
        got_sops = {str(r[0]) for r in con.execute("SELECT sop_uid FROM instances").fetchall()}
        distinct = con.execute(
            "SELECT (SELECT count(*) - count(DISTINCT trace_id) FROM receipts)"
            " + (SELECT count(*) - count(DISTINCT (tenant_id, patient_id, study_uid, series_uid, sop_uid)) FROM instances)"
            " + (SELECT count(*) - count(DISTINCT (tenant_id, patient_id, study_uid, series_uid)) FROM series_states)"
            " + (SELECT count(*) - count(DISTINCT event_key) FROM audit_events)"
        ).fetchone()
        offsets = con.execute("SELECT coalesce(sum(next_offset), 0) FROM _offsets").fetchone()
    finally:
        con.close()
    missing = (trace_ids - got_traces) | (sop_uids - got_sops)
    extra = (got_traces - trace_ids) | (got_sops - sop_uids)
    result.lost = len(missing) + sum(max(result.expected_rows[t] - result.rows[t], 0)
                                     for t in ("series_states", "audit_events"))
    result.duplicates = (int(distinct[0]) if distinct else 0) + sum(
        max(result.rows[t] - result.expected_rows[t], 0) for t in result.rows)
    result.stored_offsets = int(offsets[0]) if offsets else 0
    result.dead_lettered = sum(len(read_all(settings.kafka, f"{getattr(settings.topics, a)}.dlq", timeout_s=30.0))
                               for a in _TABLES)
    mid_run = [k for k in result.kills if k.mid_run]
    result.checks = [
        Check(f"warehouse: sink SIGKILLed {kills} times mid-run and restarted", len(mid_run) == kills,
              f"{len(mid_run)} of {kills} kills with the load partly written"
              + (f" (committed before each: {', '.join(str(k.committed_before) for k in result.kills)})" if result.kills else "")),
        Check("warehouse: the last run drained the topics and exited by itself", result.exit_code == 0,
              f"exit code {result.exit_code}"),
        Check("warehouse: rows per table equal the messages published", result.rows == result.expected_rows,
              ", ".join(f"{t} {result.rows.get(t, 0)}/{n}" for t, n in result.expected_rows.items())),
        Check("warehouse: every receipt and instance published is in DuckDB, and nothing else",
              not missing and not extra, f"{len(missing)} missing, {len(extra)} unexpected"),
        Check("warehouse: no key stored twice", result.duplicates == 0, f"{result.duplicates} duplicate row(s)"),
        Check("warehouse: stored offsets cover exactly the messages published", result.stored_offsets == result.events,
              f"{result.stored_offsets} of {result.events}"),
        Check("warehouse: nothing dead-lettered", result.dead_lettered == 0, f"{result.dead_lettered} dead letter(s)"),
    ]
    return result


__all__ = ["SinkKill", "WarehouseFaultResult", "run_warehouse_faults"]
