"""Store-event throughput from one Python process to Kafka, versus flushing after every message.

    python benchmarks/bench_publisher.py [--messages 200000] [--batch 10000] [--repeat 3]
                                         [--baseline-messages 1000] [--codec snappy] [--deadlines-only]

Three runs, in this order, in the same process, against the same broker and a
fresh 6-partition topic pair:

* **batched**: ``Publisher.send_store_events(batch, with_receipt=False)`` in
  batches of ``--batch`` events, with the configured batching (linger,
  batch size, compression): what the folder publisher does;
* **batched + receipt**: the same with the log_queue receipt, i.e. two Kafka
  messages per store event (what the receiver sends);
* **flush per message** (baseline): the reference's ``send_message``: send
  one event (key: trace_id), wait for its acknowledgement, flush the
  producer, next one; on a plain producer with the same configuration.
  Each message then pays ``linger.ms``, so the same loop also runs with
  ``linger.ms=0``: the baseline at its best, for a ratio nobody can call
  flattering.

Then the **failure deadlines**: how long a send takes to report failure with
no broker to reach (a free local port), against the bounds the publisher
promises, which are wall-clock figures and so measured here, not asserted in
the tests (the tests keep the behaviour: every message failed, with which
reason):

* unreachable broker, ``message.timeout.ms`` 1.5 s, 200 events: not before the
  message timeout, and within 15 s;
* a caller deadline of 0.5 s shorter than a 60 s message timeout: within 5 s;
* a local queue that stays full (10 messages) with a 1 s caller deadline:
  not before the deadline, and within 5 s.

A deadline out of its bound makes the script exit with 1.

Each batched mode runs ``--repeat`` times after an untimed warm-up batch; the
median run is reported. Every run counts only acknowledged messages (acks=all, idempotent producer)
and encodes its events inside the timed section. The ratio is batched over
baseline, in events per second. Targets: >= 100,000 store events/s and >= 50x
the baseline.

Needs the local stack (``dicomflow stack up``) or any broker the
``DICOMFLOW_KAFKA_*`` settings reach.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.config import producer_config
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta, encode, uid_hash
from dicomflow.settings import KafkaSettings, TopicSettings, default_config_path, load_settings
from dicomflow.stack import free_port


def make_events(count: int, series: int = 50) -> list[DicomStoreMeta]:
    """``count`` distinct store events over ``series`` series (as a modality sends a few studies)."""
    created = dt.datetime.now()
    events = []
    for n in range(count):
        study = f"1.2.826.0.1.3680043.8.498.{n // 5000}"
        series_uid = f"{study}.{n % series}"
        sop = f"{series_uid}.{n}"
        events.append(DicomStoreMeta(
            trace_id=str(uuid.uuid4()), worker_node_id="bench-node", tenant_id="1234567890", patient_id=f"PID{n // 5000:06d}",
            study_uid=study, series_uid=series_uid, sop_uid=sop, file_size=525_312,
            file_path=f"/data/1234567890/20240506/{study}/{series_uid}/{sop}.dcm",
            transfer_syntax_uid="1.2.840.10008.1.2.1", number_of_frames=1, created_time=created,
            series_uid_hash=uid_hash(series_uid), study_uid_hash=uid_hash(study), accession_number="ACC0001",
            target_ts="1.2.840.10008.1.2.1", study_date=dt.date(2024, 5, 6), transfer_status="NoNeedTransfer",
            source_ip="10.0.0.5", source_ae="CT01",
        ))
    return events


@dataclasses.dataclass
class Run:
    name: str
    events: int
    messages: int
    payload_bytes: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    def line(self) -> str:
        return (f"{self.name:<22} {self.events:>9,} events {self.messages:>9,} msgs {self.seconds:>7.2f} s "
                f"{self.events_per_s:>11,.0f} events/s {self.messages / self.seconds:>11,.0f} msgs/s "
                f"{self.payload_bytes / self.seconds / 1e6:>7.1f} MB/s")


def timed(name: str, events: Sequence[DicomStoreMeta], messages_per_event: int, send: Callable[[], int]) -> Run:
    """Run ``send`` (which returns the acknowledged message count) and measure it."""
    payload = sum(len(encode(e)) + 32 for e in events) * messages_per_event  # value + 32-byte hex key
    started = time.perf_counter()
    delivered = send()
    seconds = time.perf_counter() - started
    expected = len(events) * messages_per_event
    if delivered != expected:
        sys.exit(f"{name}: only {delivered} of {expected} messages acknowledged; figures would be meaningless")
    return Run(name, len(events), delivered, payload, seconds)


def median(runs: list[Run]) -> Run:
    """The run with the median throughput (the lower middle one for an even count)."""
    return sorted(runs, key=lambda r: r.events_per_s)[(len(runs) - 1) // 2]


def batched(pub: Publisher, events: Sequence[DicomStoreMeta], batch: int, with_receipt: bool) -> int:
    delivered = 0
    for start in range(0, len(events), batch):
        delivered += pub.send_store_events(events[start:start + batch], with_receipt=with_receipt).delivered
    return delivered


def flush_per_message(kafka: KafkaSettings, topic: str, events: Sequence[DicomStoreMeta]) -> int:
    """The reference's ``send_message``, step for step, on a producer with the same configuration.

    Serialize one event, produce it, wait for its delivery report, flush the
    producer, next event. It is written against the plain client, not the
    Publisher, so that nothing the Publisher does differently (such as not
    lingering once a batch waits for its acknowledgements) flatters or
    handicaps the baseline.
    """
    producer = Producer(producer_config(kafka, client_id="bench-baseline"))
    delivered = 0
    outcome: list[KafkaError | None] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        outcome.append(err)

    for event in events:
        outcome.clear()
        producer.produce(topic, encode(event), event.trace_id, on_delivery=on_delivery)
        while not outcome:
            producer.poll(0.1)
        if outcome[0] is None:
            delivered += 1
        producer.flush(10)
    producer.flush(10)
    return delivered


@dataclasses.dataclass
class Deadline:
    """How long one send took to report its failures, and the bound it must fall in."""

    name: str
    seconds: float
    low: float
    high: float
    failed: int
    messages: int

    @property
    def met(self) -> bool:
        return self.low <= self.seconds < self.high and self.failed == self.messages

    def line(self) -> str:
        verdict = "within bound" if self.met else "OUT OF BOUND"
        return (f"{self.name:<44} {self.seconds:>6.2f} s  bound [{self.low:.1f}, {self.high:.1f}) s  "
                f"{self.failed}/{self.messages} failed  {verdict}")


def failure_deadlines() -> list[Deadline]:
    """The three failure paths of the publisher with nothing listening on the broker's port (no broker needed)."""
    def unreachable(**changes: int) -> KafkaSettings:
        return dataclasses.replace(KafkaSettings(brokers=f"127.0.0.1:{free_port()}"), **changes)

    out = []
    with Publisher(unreachable(message_timeout_ms=1500), TopicSettings()) as pub:
        started = time.perf_counter()
        result = pub.send_store_events(make_events(200))
        out.append(Deadline("unreachable broker, message timeout 1.5 s", time.perf_counter() - started, 1.5, 15.0,
                            len(result.failures), 400))
    pub = Publisher(unreachable(message_timeout_ms=60_000), TopicSettings())
    try:
        started = time.perf_counter()
        result = pub.send_store_event(make_events(1)[0], timeout_s=0.5)
        out.append(Deadline("caller deadline 0.5 s, message timeout 60 s", time.perf_counter() - started, 0.0, 5.0,
                            len(result.failures), 2))
    finally:
        pub.close(timeout_s=0.5)
    pub = Publisher(unreachable(message_timeout_ms=60_000, queue_buffering_max_messages=10), TopicSettings())
    try:
        started = time.perf_counter()
        result = pub.send_store_events(make_events(100), timeout_s=1.0)
        out.append(Deadline("local queue full, caller deadline 1.0 s", time.perf_counter() - started, 1.0, 5.0,
                            len(result.failures), 200))
    finally:
        pub.close(timeout_s=0.5)
    return out


def report_deadlines() -> bool:
    """Measure and print the failure deadlines; True when every one is within its bound."""
    deadlines = failure_deadlines()
    print("failure deadlines (no broker listening):")
    for deadline in deadlines:
        print(f"  {deadline.line()}")
    return all(d.met for d in deadlines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="store events in the batched runs")
    parser.add_argument("--batch", type=int, default=10_000, help="events per send_store_events call")
    parser.add_argument("--baseline-messages", type=int, default=None,
                        help="store events in the flush-per-message run (default: messages/40, 200..1000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each batched mode (median reported)")
    parser.add_argument("--codec", default=None, help="override kafka.compression_codec")
    parser.add_argument("--keep-topics", action="store_true", help="do not delete the benchmark topics")
    parser.add_argument("--deadlines-only", action="store_true", help="measure only the failure deadlines (no broker needed)")
    args = parser.parse_args(argv)
    if args.deadlines_only:
        return 0 if report_deadlines() else 1
    baseline_count = args.baseline_messages or max(200, min(1000, args.messages // 40))

    settings = load_settings(default_config_path(os.environ), os.environ)
    kafka: KafkaSettings = settings.kafka
    if args.codec:
        kafka = dataclasses.replace(kafka, compression_codec=args.codec)
    suffix = uuid.uuid4().hex[:8]
    topics = dataclasses.replace(
        TopicSettings(), main=f"bench_storage_queue_{suffix}", log=f"bench_log_queue_{suffix}",
        dicom_state=f"bench_state_{suffix}", dicom_image=f"bench_image_{suffix}", audit=f"bench_audit_{suffix}",
        dlq=f"bench_storage_queue_{suffix}.dlq", partitions=6,
    )
    create_topics(kafka, topics)

    events = make_events(args.messages)
    baseline_events = make_events(baseline_count)
    print(f"broker {kafka.brokers}; compression {kafka.compression_codec}, linger {kafka.linger_ms} ms, "
          f"batch.num.messages {kafka.batch_num_messages}, acks=all, idempotent; 6 partitions")
    print(f"store event payload ~{len(encode(events[0]))} bytes; batched runs send {args.batch:,} events per call")
    try:
        with Publisher(kafka, topics) as pub:
            # Untimed: connections, metadata, idempotent producer id, JIT of the broker.
            pub.send_store_events(make_events(min(args.batch, args.messages)), with_receipt=True)
            batched_runs = [timed(f"batched #{r + 1}", events, 1,
                                  lambda: batched(pub, events, args.batch, with_receipt=False))
                            for r in range(args.repeat)]
            receipt_runs = [timed(f"batched + receipt #{r + 1}", events, 2,
                                  lambda: batched(pub, events, args.batch, with_receipt=True))
                            for r in range(args.repeat)]
        baseline = timed("flush per message", baseline_events, 1,
                         lambda: flush_per_message(kafka, topics.main, baseline_events))
        no_linger = dataclasses.replace(kafka, linger_ms=0)
        baseline_fast = timed("  same, linger.ms=0", baseline_events, 1,
                              lambda: flush_per_message(no_linger, topics.main, baseline_events))
    finally:
        if not args.keep_topics:
            delete_topics(kafka, topics.all())

    for run in (*batched_runs, *receipt_runs, baseline, baseline_fast):
        print(run.line())
    best = median(batched_runs)
    receipt = median(receipt_runs)
    ratio = best.events_per_s / baseline.events_per_s
    print(f"median of {args.repeat}: batched {best.events_per_s:,.0f} events/s "
          f"({best.payload_bytes / best.seconds / 1e6:.1f} MB/s); with receipt {receipt.events_per_s:,.0f} events/s "
          f"({receipt.messages / receipt.seconds:,.0f} msgs/s, {receipt.payload_bytes / receipt.seconds / 1e6:.1f} MB/s); "
          f"flush per message {baseline.events_per_s:,.0f} events/s")
    print(f"ratio batched / flush-per-message: {ratio:,.0f}x "
          f"(with receipt: {receipt.events_per_s / baseline.events_per_s:,.0f}x; "
          f"against the baseline without linger: {best.events_per_s / baseline_fast.events_per_s:,.0f}x)")
    print(f"target >= 100,000 store events/s: {'met' if best.events_per_s >= 100_000 else 'NOT met'} "
          f"({best.events_per_s:,.0f}); target >= 50x: {'met' if ratio >= 50 else 'NOT met'} ({ratio:,.0f}x)")
    return 0 if report_deadlines() else 1


if __name__ == "__main__":
    sys.exit(main())
