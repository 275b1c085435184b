"""Run every benchmark script and write a markdown report.

    python benchmarks/run_all.py [--quick] [--output benchmarks/REPORT.md]

Each script measures its subject and a baseline in the same run and prints
both with their ratio; this runner adds the machine description and the date,
and keeps each script's figures verbatim. The report of the latest run is
committed, so changes show in the history.

The local stack must be up (``dicomflow stack up``); the runner starts it if not.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: script, full-size arguments, quick arguments, what it measures
BENCHMARKS: list[tuple[str, list[str], list[str], str]] = [
    ("bench_publisher.py", ["--messages", "200000"], ["--messages", "20000"],
     "store-event throughput to Kafka vs. flush-per-message (the reference's send_message)"),
    ("bench_extract.py", ["--files", "3000"], ["--files", "500"],
     "DICOM header extraction, files/s on one core vs. plain pydicom"),
    ("bench_store.py", [], [], "PostgreSQL batch upserts (COPY + INSERT ON CONFLICT) vs. row-by-row INSERT"),
    ("bench_consumer.py", ["--instances", "10000", "--brokers", "3"], ["--instances", "2000"],
     "end to end: storage_queue → PostgreSQL + derived events; latency at a steady rate"),
    ("bench_warehouse.py", ["--instances", "100000"], ["--instances", "20000"],
     "warehouse sink Kafka → DuckDB over >= 200,000 mixed events vs. executemany row inserts"),
    ("bench_receiver.py", ["--instances", "2000", "--brokers", "3"], ["--instances", "300"],
     "C-STORE receive rate (storescu → scp) vs. Orthanc (default index, PostgreSQL index)"),
    ("bench_web.py", ["--index-instances", "100000"], ["--index-instances", "100000", "--files", "200", "--requests", "200"],
     "DICOMweb: QIDO-RS search over 100k instances, WADO-RS retrieval, metadata, thumbnails vs. Orthanc's DICOMweb plugin"),
    ("bench_blobs.py", ["--objects", "300"], ["--objects", "100"],
     "the storage layer at 25 kB: filesystem vs. S3 (a private S3Proxy) through blobs/"),
    ("bench_qr.py", ["--index-instances", "100000"], ["--index-instances", "20000"],
     "C-FIND study-level latency over a 100k-instance index (target p99 <= 50 ms) vs. Orthanc's DICOM server"),
    ("bench_qr_retrieve.py", ["--instances", "300", "--rounds", "3"], ["--instances", "100", "--rounds", "3"],
     "C-GET and C-MOVE instances/s (pynetdicom engine) vs. Orthanc, three alternated rounds"),
    ("bench_lifecycle.py", [], ["--study-instances", "300", "--index-instances", "10000"],
     "delete a 1,000-instance study: DELETE -> gone from QIDO (<= 2 s), purge (>= 1,000 objects/s), change feed (>= 5,000 entries/s)"),
    ("bench_report.py", ["--instances", "1000000"], ["--instances", "100000"],
     "dicomflow report over a DuckDB warehouse of 1,000,000 instances (target <= 3 s) vs. the same answers in Python"),
]


def machine() -> list[str]:
    """A short description of the machine the figures come from."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    return [
        f"- CPU: {cpu}, {os.cpu_count()} cores",
        f"- memory: {mem_gib:.1f} GiB",
        f"- OS: {platform.platform()}",
        f"- Python: {platform.python_version()}",
        f"- Java: {java[0] if java else 'unknown'}",
        "- Kafka and PostgreSQL: the local stack on the same machine (single node)",
    ]


def run(script: str, args: list[str], timeout_s: int) -> tuple[int, str, float]:
    started = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        output = proc.stdout + (("\n[stderr]\n" + proc.stderr[-3000:]) if proc.returncode else "")
        return proc.returncode, output, time.monotonic() - started
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return 124, out + f"\n[timed out after {timeout_s} s]", time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--output", type=Path, default=HERE / "REPORT.md")
    parser.add_argument("--only", nargs="*", help="run only these scripts")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per script")
    opts = parser.parse_args()

    subprocess.run([sys.executable, "-m", "dicomflow.cli", "stack", "up"], check=True, capture_output=True)
    sections: list[str] = []
    failures = 0
    for script, full, quick, what in BENCHMARKS:
        if opts.only and script not in opts.only:
            continue
        if not (HERE / script).exists():
            sections.append(f"## {script}\n\n_{what}_\n\nnot present\n")
            continue
        args = quick if opts.quick else full
        print(f"running {script} {' '.join(args)}", flush=True)
        rc, output, seconds = run(script, args, opts.timeout)
        failures += rc != 0
        status = "ok" if rc == 0 else f"exit code {rc}"
        sections.append(
            f"## {script} {' '.join(args)}\n\n_{what}_ — {status}, {seconds:.0f} s\n\n```\n{output.strip()}\n```\n"
        )
        print(output, flush=True)
    report = "\n".join(
        [
            "# dicomflow benchmark report",
            "",
            f"Run on {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} ({'quick sizes' if opts.quick else 'full sizes'}),"
            " by `python benchmarks/run_all.py`. Each script measures a baseline in the same run; ratios are printed by the script.",
            "",
            "## Machine",
            "",
            *machine(),
            "",
            *sections,
        ]
    )
    opts.output.write_text(report)
    print(f"report written to {opts.output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
