"""``python -m dicomflow_faults``: run the fault-injection suite and print its figures.

``scripts/faults.sh`` runs it with ``faults/`` (this package's folder) on ``PYTHONPATH``.

Exit codes: 0 every check passed; 1 a check failed (something lost,
duplicated, dead-lettered wrongly, a crash, a fault not survived, memory not
flat); 2 the suite could not run (the private stack would not start).

Examples::

    python -m dicomflow_faults                       # full size: 20,000 instances, 100,000 soak events,
                                                     # 20,000 warehouse events with 3 sink kills
                                                     # 1,000 instances through a three-broker failover
                                                     # 45 s of DICOMweb load, PostgreSQL SIGKILLed twice
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 --protocol-fuzz 0 \\
        --warehouse 0 --failover 0 --web-fuzz 0 --s3 1500   # the S3 run alone (S3Proxy killed mid-run)
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 --protocol-fuzz 0 \\
        --warehouse 0 --failover 0 --s3 0 --web-fuzz 5000   # the web fuzz phase alone (1-2 minutes)
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 --protocol-fuzz 0 \\
        --warehouse 0 --failover 0 --s3 0 --web-fuzz 0 --web 45   # the web phase alone (about 80 s)
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 --protocol-fuzz 0 \\
        --warehouse 0 --failover 0 --s3 0 --web-fuzz 0 --web 0 --journal 1500   # the journal run alone
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 \\
        --failover 1000                              # the failover phase alone (about 2 minutes)
    python -m dicomflow_faults --instances 0 --soak 0 --fuzz 0 --fuzz-files 0 \\
        --failover 300 --failover-rate 25 --failover-outage 0   # only the leader kill (about 1 minute)
    python -m dicomflow_faults --instances 300 --soak 2000 --fuzz 60 --fuzz-files 20 \\
        --faults-per-kind 1 --rate 40 --protocol-fuzz 300 --warehouse 3000 --warehouse-kills 2   # a smoke run of a few minutes
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar, cast

from dicomflow.errors import DicomflowError, StackError
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.report import SuiteReport
from dicomflow_faults.scenario import KINDS, FaultKind

log = logging.getLogger("dicomflow_faults")

T = TypeVar("T")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dicomflow_faults",
        description="Kill the consumer, the receiver, Kafka and PostgreSQL under load; soak; fuzz; "
                    "kill the warehouse sink mid-run; kill PostgreSQL under DICOMweb load. "
                    "Uses a private stack on free ports, never the shared one.",
    )
    p.add_argument("--instances", type=int, default=20000, help="C-STORE instances of the fault run (0: skip it).")
    p.add_argument("--soak", type=int, default=100000, help="Store events of the soak (0: skip it).")
    p.add_argument("--fuzz", type=int, default=500, help="Hypothesis-generated payloads (0 with --fuzz-files 0: skip).")
    p.add_argument("--fuzz-files", type=int, default=200, help="Truncated / bit-flipped sample files.")
    p.add_argument("--controls", type=int, default=20, help="Good instances mixed into the fuzz inputs.")
    p.add_argument("--protocol-fuzz", type=int, default=5000,
                   help="Mutated DICOM PDU sequences sent to a receiver of its own (0: skip).")
    p.add_argument("--web-fuzz", type=int, default=5000,
                   help="Mutated HTTP requests sent to a dicomflow web of its own (OAuth2, small max STOW size; 0: skip).")
    p.add_argument("--warehouse", type=int, default=20000,
                   help="Messages of the warehouse phase (log, state, image, audit; 0: skip it).")
    p.add_argument("--warehouse-kills", type=int, default=3, help="SIGKILLs of the warehouse sink, mid-run.")
    p.add_argument("--failover", type=int, default=1000,
                   help="C-STORE instances of the failover phase on a private three-broker cluster (0: skip it).")
    p.add_argument("--failover-rate", type=float, default=30.0,
                   help="C-STOREs per second of the failover phase (the load must outlast both faults and "
                        "two node restarts: ~60 s).")
    p.add_argument("--failover-pause-target", type=float, default=15.0,
                   help="Longest acknowledgement pause after the leader kill that passes (seconds).")
    p.add_argument("--failover-outage", type=float, default=15.0,
                   help="Seconds two brokers stay down together (below min ISR); 0: only the leader kill.")
    p.add_argument("--s3", type=int, default=1500,
                   help="C-STORE instances of the S3 run: storage on a private S3Proxy, SIGKILLed mid-run (0: skip it).")
    p.add_argument("--journal", type=int, default=1500,
                   help="C-STORE instances of the journal run: receiver.ack = \"journal\", the receiver SIGKILLed "
                        "--journal-kills times mid-run (0: skip it).")
    p.add_argument("--journal-kills", type=int, default=5, metavar="N", help="SIGKILLs of the receiver in the journal run.")
    p.add_argument("--web", type=float, default=45.0, metavar="SECONDS",
                   help="Seconds of QIDO-RS / WADO-RS load on `dicomflow web` while PostgreSQL is SIGKILLed and "
                        "restarted (0: skip it).")
    p.add_argument("--web-kills", type=int, default=2, metavar="N", help="SIGKILLs of PostgreSQL during the web phase.")
    p.add_argument("--faults-per-kind", type=int, default=2, help="SIGKILLs of each kind during the fault run.")
    p.add_argument("--kinds", default=",".join(KINDS), help="Fault kinds, comma-separated (default: all four).")
    p.add_argument("--associations", type=int, default=4, help="Parallel C-STORE associations of the sender.")
    p.add_argument("--receiver-processes", type=int, default=1,
                   help="Processes of the receiver (dispatcher + workers when above 1; all killed together).")
    p.add_argument("--rate", type=float, default=0.0, help="Cap on C-STOREs per second (0: as fast as acknowledged).")
    p.add_argument("--down", type=float, nargs=2, default=(0.5, 3.0), metavar=("MIN", "MAX"),
                   help="Seconds a killed service stays down before its restart (uniform).")
    p.add_argument("--rss-bound-mib", type=float, default=50.0, help="Largest RSS growth after warm-up called flat.")
    p.add_argument("--seed", type=int, default=None, help="Seed of every random choice (default: random, printed).")
    p.add_argument("--work-dir", type=Path, default=None, help="Where the private stack's temporary folder goes.")
    p.add_argument("--kafka-cache", type=Path, default=None,
                   help="A Kafka jar cache to share (default: .dicomflow/cache here or in the checkout, if any).")
    p.add_argument("--keep", action="store_true", help="Keep the component logs even when everything passed.")
    p.add_argument("--json", type=Path, default=None, help="Also write the figures as JSON to this file.")
    p.add_argument("--log-level", default="INFO", help="Log level of the suite's own progress messages.")
    args = p.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        p.error(f"unknown fault kind(s): {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    args.kinds = kinds
    for name in ("instances", "s3", "soak", "fuzz", "fuzz_files", "controls", "faults_per_kind", "protocol_fuzz",
                 "warehouse", "warehouse_kills", "failover", "failover_outage", "web_fuzz", "web", "web_kills", "journal",
                 "journal_kills"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if args.web and args.web_kills < 1:
        p.error("--web-kills must be at least 1 when the web phase runs")
    if args.journal and args.journal_kills < 1:
        p.error("--journal-kills must be at least 1 when the journal run runs")
    if args.associations < 1 or args.receiver_processes < 1:
        p.error("--associations and --receiver-processes must be at least 1")
    return args


def _configure_logging(level: str) -> None:
    import pydicom  # noqa: F401 - pydicom sets its logger's level on import; ours must come after

    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Reconnection chatter while a service is down on purpose; the report says what matters.
    for name, lvl in (("dicomflow.kafka", logging.ERROR), ("dicomflow.store", logging.WARNING),
                      ("dicomflow.stack", logging.WARNING), ("pynetdicom", logging.CRITICAL),
                      ("pydicom", logging.ERROR)):
        logging.getLogger(name).setLevel(lvl)


def _timed(report: SuiteReport, name: str, action: Callable[[], T]) -> T:
    t0 = time.monotonic()
    try:
        return action()
    finally:
        report.timings[name] = time.monotonic() - t0


def run(args: argparse.Namespace) -> SuiteReport:
    """Run the phases asked for on private stacks; each stack is removed whatever happens."""
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    report = SuiteReport(seed=seed, options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()})
    started = time.monotonic()
    if (args.instances or args.soak or args.fuzz or args.fuzz_files or args.protocol_fuzz or args.warehouse
            or args.journal or args.web_fuzz or args.web):
        _run_single_broker(args, report, seed)
    if args.s3:
        _run_s3(args, report, seed)
    if args.failover:
        _run_failover(args, report, seed)
    report.timings["total"] = time.monotonic() - started
    return report


def _run_failover(args: argparse.Namespace, report: SuiteReport, seed: int) -> None:
    """The failover phase, on a private three-broker cluster of its own."""
    import warnings

    from dicomflow_faults.failover import run_failover

    log_dir = Path(tempfile.mkdtemp(prefix="dicomflow-failover-logs-", dir=args.work_dir))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report.failover = _timed(report, "failover phase", lambda: run_failover(
                args.failover, seed=seed + 3, log_dir=log_dir, base=args.work_dir, cache=args.kafka_cache,
                rate=args.failover_rate,
                pause_target_s=args.failover_pause_target, outage_s=args.failover_outage))
    except (DicomflowError, OSError) as exc:
        log.exception("the failover phase could not finish")
        report.errors.append(f"suite aborted: failover: {type(exc).__name__}: {exc}")
    if args.keep or not report.passed:
        if report.log_dir is None:
            report.log_dir = str(log_dir)
        else:  # the single-broker phases kept theirs: one folder for all
            shutil.copytree(log_dir, Path(report.log_dir) / "failover", dirs_exist_ok=True)
            shutil.rmtree(log_dir, ignore_errors=True)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)


def _run_s3(args: argparse.Namespace, report: SuiteReport, seed: int) -> None:
    """The S3 run, on a private single-broker stack with an S3Proxy of its own."""
    import warnings

    from dicomflow_faults.s3run import run_s3_faults

    stack = PrivateStack(base=args.work_dir, cache=args.kafka_cache, s3=True)
    log_dir = stack.dir / "logs"
    log_dir.mkdir()
    try:
        _timed(report, "s3 stack up", stack.up)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            report.s3 = _timed(report, "s3 fault run", lambda: run_s3_faults(
                stack, args.s3, seed=seed + 5, log_dir=log_dir, per_kind=args.faults_per_kind,
                associations=args.associations))
    except (DicomflowError, OSError) as exc:
        log.exception("the S3 run could not finish")
        report.errors.append(f"suite aborted: s3: {type(exc).__name__}: {exc}")
    finally:
        if args.keep or not report.passed:
            kept = Path(tempfile.mkdtemp(prefix="dicomflow-faults-s3-logs-", dir=args.work_dir))
            shutil.copytree(log_dir, kept, dirs_exist_ok=True)
            if stack.stack.s3proxy.log_file.exists():
                shutil.copy2(stack.stack.s3proxy.log_file, kept / "s3proxy.log")
            report.log_dir = report.log_dir or str(kept)
        _timed(report, "s3 stack down", stack.close)


def _run_single_broker(args: argparse.Namespace, report: SuiteReport, seed: int) -> None:
    """Fault run, soak and fuzz on a private single-broker stack."""
    import warnings

    stack = PrivateStack(base=args.work_dir, cache=args.kafka_cache)
    log_dir = stack.dir / "logs"
    log_dir.mkdir()
    try:
        _timed(report, "private stack up", stack.up)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's complaints about the damaged files are expected
            _run_phases(args, stack, log_dir, report, seed)
    except (DicomflowError, OSError) as exc:
        log.exception("the suite could not finish")
        report.errors.append(f"suite aborted: {type(exc).__name__}: {exc}")
    finally:
        if args.keep or not report.passed:
            kept = Path(tempfile.mkdtemp(prefix="dicomflow-faults-logs-", dir=args.work_dir))
            shutil.copytree(log_dir, kept, dirs_exist_ok=True)
            for node in stack.stack.kafka.nodes:
                for name in ("server.log", "stdout.log"):
                    src = node.home / name
                    if src.exists():
                        shutil.copy2(src, kept / f"kafka-{node.node_id}-{name}")
            if stack.stack.postgres.log_file.exists():
                shutil.copy2(stack.stack.postgres.log_file, kept / "postgres.log")
            report.log_dir = str(kept)
        _timed(report, "private stack down", stack.close)


def _run_phases(args: argparse.Namespace, stack: PrivateStack, log_dir: Path, report: SuiteReport, seed: int) -> None:
    from dicomflow_faults.fuzz import run_fuzz
    from dicomflow_faults.scenario import FaultRun
    from dicomflow_faults.soak import run_soak
    from dicomflow_faults.warehouse import run_warehouse_faults

    if args.instances:
        report.faults = _timed(report, "fault run", lambda: FaultRun(
            stack, args.instances, seed=seed, log_dir=log_dir, per_kind=args.faults_per_kind,
            kinds=cast(list[FaultKind], args.kinds), associations=args.associations, rate=args.rate or None,
            down_range=(min(args.down), max(args.down)), receiver_processes=args.receiver_processes,
        ).run())
    if args.soak:
        report.soak = _timed(report, "soak", lambda: run_soak(
            stack, args.soak, seed=seed + 1, log_dir=log_dir, bound_mib=args.rss_bound_mib))
    if args.fuzz or args.fuzz_files:
        report.fuzz = _timed(report, "fuzz", lambda: run_fuzz(
            stack, payloads=args.fuzz, files=args.fuzz_files, controls=args.controls, seed=seed + 2, log_dir=log_dir))
    if args.protocol_fuzz:
        from dicomflow_faults.protofuzz import run_protocol_fuzz

        report.protocol = _timed(report, "protocol fuzz", lambda: run_protocol_fuzz(
            stack, args.protocol_fuzz, seed=seed + 3, log_dir=log_dir,
            progress=lambda n: log.info("protocol fuzz: %d of %d sequences", n, args.protocol_fuzz)))
    if args.web_fuzz:
        from dicomflow_faults.webfuzz import run_web_fuzz

        report.web_fuzz = _timed(report, "web fuzz", lambda: run_web_fuzz(
            stack, args.web_fuzz, seed=seed + 6, log_dir=log_dir,
            progress=lambda n: log.info("web fuzz: %d of %d requests", n, args.web_fuzz)))
    if args.warehouse:
        report.warehouse = _timed(report, "warehouse", lambda: run_warehouse_faults(
            stack, args.warehouse, kills=args.warehouse_kills, seed=seed + 3, log_dir=log_dir))
    if args.journal:
        from dicomflow_faults.journalrun import run_journal_faults

        report.journal = _timed(report, "journal run", lambda: run_journal_faults(
            stack, args.journal, seed=seed + 8, log_dir=log_dir, kills=args.journal_kills,
            associations=args.associations))
    if args.web:  # last: it kills PostgreSQL under a web server, nothing else runs on the stack meanwhile
        from dicomflow_faults.webrun import run_web_faults

        report.web = _timed(report, "web phase", lambda: run_web_faults(
            stack, args.web, seed=seed + 7, log_dir=log_dir, kills=args.web_kills))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging(args.log_level)
    report = run(args)
    report.print(sys.stdout)
    sys.stdout.flush()
    if args.json is not None:
        args.json.write_text(report.dumps() + "\n")
    if any(e.startswith("suite aborted") for e in report.errors) and report.faults is None \
            and report.soak is None and report.fuzz is None and report.protocol is None \
            and report.warehouse is None and report.failover is None and report.s3 is None and report.journal is None \
            and report.web_fuzz is None and report.web is None:
        return 2
    return 0 if report.passed else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except StackError as exc:
        print(f"fault suite: {exc}", file=sys.stderr)
        sys.exit(2)
