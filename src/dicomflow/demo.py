"""The whole system end to end, on bundled sample DICOM (the ``dicomflow demo`` command is in :mod:`dicomflow.cli.demo`).

What a new user should see the system do, with nothing but this repository:

1. the local stack up (Kafka + PostgreSQL on 127.0.0.1), every topic created,
   the schema migrated;
2. the receiver (``dicomflow scp``) and the consumer (``dicomflow consume``)
   started as their own processes, exactly as in production;
3. a corpus made from pydicom's sample images with fresh UIDs (several studies
   and series) sent over the DICOM network by an independent client (dcmtk's
   storescu, C-STORE);
4. a wait until PostgreSQL holds every instance that was acknowledged;
5. a report: studies / series / instances as PostgreSQL has them, the messages
   this run added to each topic, and the throughput;
6. the warehouse sink (``dicomflow warehouse run --until-idle``) bringing the
   topics into the DuckDB warehouse, then ``dicomflow report``'s summary and
   its HTML page (path printed).

With ``s3`` (``dicomflow demo --s3``) the stack is started with S3Proxy
(``stack up --s3``), every component runs with ``storage.backend = "s3"``
(:func:`run_settings`), and the run ends by checking that every acknowledged
instance is an object in the bucket and saying where they are (bucket,
prefix, S3Proxy's data folder).

Fresh UIDs on every run, so running it twice shows the second run's studies
alongside the first's rows.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicomflow.settings import Settings, to_child_env

#: dcmtk's storescu, by full path: a Python package may install a script of the same name.
STORESCU = "/usr/bin/storescu"


# ----------------------------------------------------------------------------- steps


def _component_env(settings: Settings, scp_port: int) -> dict[str, str]:
    """The environment that hands this run's settings to the component processes.

    The storage root and the warehouse file are made absolute (the components
    run in their own folder) and the receiver listens on this run's free port.
    """
    run = dataclasses.replace(
        settings,
        storage=dataclasses.replace(settings.storage, root=settings.storage.root.resolve()),
        receiver=dataclasses.replace(settings.receiver, host="127.0.0.1", port=scp_port),
        warehouse=dataclasses.replace(settings.warehouse, path=settings.warehouse.path.resolve()),
    )
    return to_child_env(run, os.environ)


@contextmanager
def _process(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run one component as its own process; stop it by its PID (SIGTERM, then SIGKILL)."""
    log_file = log_dir / f"{name}.log"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dicomflow.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_listening(port: int, ae_title: str, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    """Wait until the receiver answers a C-ECHO (a bare TCP probe would leave a half-open association)."""
    import logging

    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="DEMO_SCU")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    deadline = time.monotonic() + timeout_s
    # "Connection refused" while the receiver starts is expected, not an error to show.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the receiver exited with code {proc.returncode}; see {log}")
        assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
        if assoc.is_established:
            status = assoc.send_c_echo()
            assoc.release()
            if getattr(status, "Status", None) == 0x0000:
                logging.getLogger("pynetdicom").setLevel(logging.WARNING)
                return
        time.sleep(0.2)
    raise RuntimeError(f"the receiver did not answer C-ECHO on 127.0.0.1:{port} within {timeout_s:.0f} s; see {log}")


@dataclass
class SendResult:
    sent: int
    succeeded: list[str]
    failed: list[tuple[str, str]]
    seconds: float


def _send(paths: list[Path], port: int, ae_title: str, associations: int) -> SendResult:
    """C-STORE every file with dcmtk's storescu (what modalities' software resembles),
    over ``associations`` parallel associations; report per file.

    storescu says per file "Sending file: X" then "Received Store Response (Success)";
    a file with no Success response counts as failed.
    """
    from concurrent.futures import ThreadPoolExecutor

    env = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk: Nagle off (not needed: the receiver acknowledges at once)

    def worker(chunk: list[Path]) -> tuple[list[str], list[tuple[str, str]]]:
        proc = subprocess.run(
            [STORESCU, "-v", "-aet", "DEMO_SCU", "-aec", ae_title, "127.0.0.1", str(port), *map(str, chunk)],
            capture_output=True, text=True, env=env, check=False,
        )
        answered: dict[str, str] = {}
        current: str | None = None
        for line in (proc.stdout + proc.stderr).splitlines():
            if "Sending file: " in line:
                current = line.split("Sending file: ", 1)[1].strip()
            elif "Received Store Response" in line and current is not None:
                answered[current] = line.split("Received Store Response", 1)[1].strip(" ()")
                current = None
        ok = [p.stem for p in chunk if answered.get(str(p)) == "Success"]
        bad = [(p.stem, answered.get(str(p), f"no response (storescu exit {proc.returncode})"))
               for p in chunk if answered.get(str(p)) != "Success"]
        return ok, bad

    chunks = [c for c in (paths[i::associations] for i in range(associations)) if c]
    started = time.monotonic()
    with ThreadPoolExecutor(len(chunks)) as pool:
        results = list(pool.map(worker, chunks))
    seconds = time.monotonic() - started
    return SendResult(
        sent=len(paths),
        succeeded=[uid for ok, _ in results for uid in ok],
        failed=[f for _, bad in results for f in bad],
        seconds=seconds,
    )


def _wait_rows(conninfo: str, sop_uids: list[str], timeout_s: float) -> tuple[int, float]:
    """Wait until every SOP UID has its instance row; return (found, seconds waited)."""
    import psycopg

    started = time.monotonic()
    found = 0
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while time.monotonic() - started < timeout_s:
            row = conn.execute("SELECT count(*) FROM dicom_image_meta WHERE sop_uid = ANY(%s)", (sop_uids,)).fetchone()
            found = int(row[0]) if row else 0
            if found >= len(sop_uids):
                break
            time.sleep(0.2)
    return found, time.monotonic() - started


def _topic_counts(settings: Settings) -> dict[str, int]:
    """Messages currently in each topic (sum of high minus low watermarks)."""
    from dicomflow.kafka.reader import message_counts

    return message_counts(settings.kafka, list(settings.topics.all()))


def _report_rows(conninfo: str, study_uids: list[str]) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            """
            SELECT s.study_uid, s.patient_id, s.modality, s.series_number, s.series_description,
                   s.series_related_instances, count(i.sop_uid) AS rows, s.study_date
            FROM dicom_state_meta s
            LEFT JOIN dicom_image_meta i USING (tenant_id, study_uid, series_uid)
            WHERE s.study_uid = ANY(%s)
            GROUP BY s.tenant_id, s.study_uid, s.series_uid
            ORDER BY s.study_uid, s.series_number
            """,
            (study_uids,),
        ).fetchall()


# ----------------------------------------------------------------------------- the run


def run_demo(settings: Settings, instances: int, studies: int, series_per_study: int, associations: int,
             timeout_s: float, *, s3: bool = False) -> int:
    """Run every step and print the report; 0 when every acknowledged instance reached PostgreSQL
    (and, with ``s3``, the bucket)."""
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 132)
    from dicomflow.demo_s3 import where_objects_are

    console.rule("[bold]dicomflow demo" + (" on S3 (S3Proxy)" if s3 else ""))
    settings = _prepare(settings, console, s3=s3)
    run = _run_pipeline(settings, _Sizes(instances, studies, series_per_study, associations), timeout_s, console)
    lost = _print_results(settings, run, console)
    warehouse_ok = _warehouse_and_report(settings, run.env, run.log_dir, console)
    objects_ok = where_objects_are(settings, run.sent.succeeded, console) if s3 else True
    console.print("The stack keeps running; `dicomflow stack down` stops it.")
    return 0 if lost == 0 and not run.sent.failed and warehouse_ok and objects_ok else 1


def run_settings(stack_settings: Settings, *, s3: bool) -> Settings:
    """The settings every component of the run gets: the stack's, with ``storage.backend = "s3"`` for ``s3``.

    ``stack_settings`` are :attr:`LocalStack.settings` after ``up``: their
    ``storage.s3`` names the running S3Proxy (unless the user configured an endpoint).

    Raises:
        StackError: ``s3`` and no S3 endpoint to use (S3Proxy is not running, none is configured).
    """
    if not s3:
        return stack_settings
    from dicomflow.errors import StackError

    if not stack_settings.storage.s3.endpoint:
        raise StackError("demo --s3: S3Proxy is not running and no storage.s3.endpoint is configured")
    return dataclasses.replace(stack_settings, storage=dataclasses.replace(stack_settings.storage, backend="s3"))


@dataclass(frozen=True)
class _Sizes:
    """What the user asked the demo to send."""

    instances: int
    studies: int
    series_per_study: int
    associations: int


@dataclass
class _Run:
    """What one pass through receiver and consumer did (for the report)."""

    study_uids: list[str]
    sent: SendResult
    found: int
    waited_s: float
    before: dict[str, int]
    after: dict[str, int]
    env: dict[str, str]
    log_dir: Path


def _prepare(settings: Settings, console: Any, *, s3: bool = False) -> Settings:
    """The stack up (with S3Proxy for ``s3``), every topic created, the schema migrated, the storage root made;
    returns the settings of the run (:func:`run_settings`)."""
    from dicomflow.kafka.admin import create_topics
    from dicomflow.stack import LocalStack
    from dicomflow.store.postgres import PgStore

    stack = LocalStack(settings)
    for s in stack.up(s3=True if s3 else None):
        console.print(f"[green]✓[/] {s.name} running, PID {s.pid}, {s.address}")
    settings = run_settings(stack.settings, s3=s3)
    if s3:
        s3s = settings.storage.s3
        console.print(f"[green]✓[/] storage.backend = \"s3\": bucket {s3s.bucket} at {s3s.endpoint}"
                      f"{f', prefix {s3s.prefix}' if s3s.prefix else ''}")
    outcomes = create_topics(settings.kafka, settings.topics)
    console.print(f"[green]✓[/] topics ready: {', '.join(o.name for o in outcomes)}")
    store = PgStore(settings.database)
    try:
        applied = store.migrate()
    finally:
        store.close()
    console.print(f"[green]✓[/] schema migrated ({', '.join(applied) if applied else 'already current'})")
    settings.storage.root.mkdir(parents=True, exist_ok=True)
    return settings


def _run_pipeline(settings: Settings, sizes: _Sizes, timeout_s: float, console: Any) -> _Run:
    """Make the corpus, start receiver and consumer, C-STORE everything, wait for the rows."""
    from dicomflow.corpus import make_corpus
    from dicomflow.stack import free_port

    with tempfile.TemporaryDirectory(prefix="dicomflow-demo-") as tmp:
        corpus = make_corpus(Path(tmp) / "modality", sizes.instances, studies=sizes.studies,
                             series_per_study=sizes.series_per_study, templates=("CT_small.dcm", "MR_small.dcm"),
                             tenant_id="demo")
        paths = [Path(e.file_path) for e in corpus.events]
        console.print(f"[green]✓[/] corpus: {len(paths)} instances in {len(corpus.studies)} studies, "
                      f"{len(corpus.series)} series (pydicom samples, fresh UIDs)")
        before = _topic_counts(settings)
        log_dir = settings.stack.dir.resolve() / "demo"
        log_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()  # outside the ephemeral range (see dicomflow.stack.free_ports)
        env = _component_env(settings, port)
        ae_title = settings.receiver.ae_title
        with _process("consumer", ["consume"], env, log_dir), _process("receiver", ["scp"], env, log_dir) as scp:
            _wait_listening(port, ae_title, scp, 60, log_dir / "receiver.log")
            console.print(f"[green]✓[/] receiver listening on 127.0.0.1:{port} (AE {ae_title}); consumer running"
                          f" (logs in {log_dir})")
            sent = _send(paths, port, ae_title, sizes.associations)
            console.print(f"[green]✓[/] C-STORE (storescu): {len(sent.succeeded)} of {sent.sent} acknowledged in "
                          f"{sent.seconds:.1f} s ({len(sent.succeeded) / max(sent.seconds, 1e-9):.0f} instances/s, "
                          f"{sizes.associations} associations)")
            for uid, why in sent.failed[:10]:
                console.print(f"[red]✗[/] {uid}: {why}")
            found, waited = _wait_rows(settings.database.conninfo(), sent.succeeded, timeout_s)
        return _Run(sorted(corpus.studies), sent, found, waited, before, _topic_counts(settings), env, log_dir)


def _print_results(settings: Settings, run: _Run, console: Any) -> int:
    """This run's series as PostgreSQL has them, the messages per topic, the totals; return the instances lost."""
    from rich.table import Table

    rows = _report_rows(settings.database.conninfo(), run.study_uids)
    table = Table(title="PostgreSQL after the run: this run's series")
    for col in ("study UID", "patient", "study date", "modality", "series #", "instances (state)", "instance rows"):
        table.add_column(col, overflow="fold")  # a UID folds over lines, it is never cut
    for r in rows:
        table.add_row(r[0], r[1], str(r[7]), r[2] or "", str(r[3] or ""), str(r[5]), str(r[6]))
    console.print(table)
    topics = Table(title="Kafka: messages this run added")
    topics.add_column("topic", overflow="fold")
    topics.add_column("messages", justify="right")
    for topic in settings.topics.all():
        topics.add_row(topic, str(run.after.get(topic, 0) - run.before.get(topic, 0)))
    console.print(topics)
    sent, total_s = run.sent, run.sent.seconds + run.waited_s
    lost = len(sent.succeeded) - run.found
    console.print(
        f"studies {len(run.study_uids)}, series {len(rows)}, instances acknowledged {len(sent.succeeded)}, "
        f"in PostgreSQL {run.found}, lost {lost}; end to end {len(sent.succeeded) / max(total_s, 1e-9):.0f} "
        f"instances/s ({total_s:.1f} s from first C-STORE to last row)"
    )
    if run.study_uids and settings.web.viewer.enabled:
        from dicomflow.web.viewer import viewer_url

        console.print(f"look at a study: run `dicomflow web` and open {viewer_url(settings, run.study_uids[0])}")
    return lost


def _warehouse_and_report(settings: Settings, env: dict[str, str], log_dir: Path, console: Any) -> bool:
    """Run the warehouse sink until the topics are idle, then print the report's summary and write its HTML."""
    from dicomflow.errors import DicomflowError
    from dicomflow.warehouse.report import DuckDBSource, build_report
    from dicomflow.warehouse.report_html import render_html
    from dicomflow.warehouse.report_text import print_report, summary_line

    started = time.monotonic()
    with open(log_dir / "warehouse.log", "ab") as out:
        proc = subprocess.run([sys.executable, "-m", "dicomflow.cli", "warehouse", "run", "--until-idle", "3"],
                              env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                              timeout=600, check=False)
    if proc.returncode != 0:
        console.print(f"[red]✗[/] warehouse sink exited with {proc.returncode}; see {log_dir / 'warehouse.log'}")
        return False
    console.print(f"[green]✓[/] warehouse sink caught up in {time.monotonic() - started:.1f} s "
                  f"({settings.warehouse.path.resolve()})")
    try:
        source = DuckDBSource(settings)
        try:
            report = build_report(source)
        finally:
            source.close()
    except DicomflowError as exc:
        console.print(f"[red]✗[/] report failed: {exc}")
        return False
    print_report(report, console, sections=("per_modality", "latency_per_day", "dead_letters"))
    page = log_dir / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    console.print(f"[green]✓[/] warehouse report: {summary_line(report)}; HTML report: {page}")
    return True
