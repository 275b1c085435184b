"""C-GET and C-MOVE instances/s: dicomflow scp ([qr], ``--engine`` native or pynetdicom) versus Orthanc, same files, same run.

The rows of issue 21's ``bench_qr.py`` for retrieval (C-FIND's latency rows
live beside them there). One study of ``--instances`` CT instances (the
corpus templates, Explicit VR Little Endian) is indexed by the consumer and
loaded into Orthanc over REST. Each round retrieves the whole study from
each server, alternating, ``--rounds`` times:

* C-GET: dcmtk ``getscu`` (study level, writing into a fresh folder);
* C-MOVE: dcmtk ``movescu`` to a dcmtk ``storescp`` destination (a fresh
  folder per run), the destination configured in both servers.

The figure is instances / wall-clock seconds of the SCU's run (and each
server's CPU milliseconds per instance, which the shared machine's load
disturbs less than the wall clock), median over
the rounds. Target (issue 21): >= 1.5x Orthanc for both. dicomflow serves
from this process (a thread per association); Orthanc with its defaults and
``TCP_NODELAY=1`` in its environment, like every dcmtk tool here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.pipeline.service import ConsumerService
from dicomflow.receiver.scp import Receiver
from dicomflow.settings import load_settings
from dicomflow.settings.qr import QrSettings
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore
from tests.integration.web_support import ORTHANC, Orthanc

DEST_AE = "BENCHSCP"


class OrthancDimse(Orthanc):
    """Orthanc with its DICOM server on, the storescp destination known as a modality."""

    def __init__(self, work: Path, dest_port: int) -> None:
        self.dicom_port = free_port()
        self.http = free_port()
        self.folder = work / f"orthanc-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True)
        config = {
            "Name": "bench", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "DicomServerEnabled": True, "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port, "HttpPort": self.http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "StorageCompression": False, "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True, "DicomCheckCalledAet": False,
            "DicomModalities": {"bench": [DEST_AE, "127.0.0.1", dest_port], "getscu": ["GETSCU", "127.0.0.1", 1]},
        }
        (self.folder / "config.json").write_text(json.dumps(config))
        self.log = (self.folder / "orthanc.log").open("wb")
        # TCP_NODELAY=1: Orthanc's DICOM network is dcmtk's, which reads it (without it each of
        # Orthanc's C-STOREs waits ~40 ms for Nagle + delayed ACK, and the comparison measures that)
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "config.json")], stdout=self.log,
                                        stderr=self.log, cwd=self.folder, env=env())
        deadline = time.monotonic() + 60
        while not self._alive():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("Orthanc did not start")
            time.sleep(0.2)


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (every thread)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_s() -> float:
    """CPU seconds used so far by this process's waited-for children (getscu, movescu, storescp)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    run = subprocess.run(args, env=env(), capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    if run.returncode != 0:
        raise RuntimeError(f"{args[0]} failed: {run.stderr[-1000:]}")
    return elapsed


def count(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file())


def get_rate(port: int, called: str, study: str, work: Path, expected: int) -> float:
    folder = Path(tempfile.mkdtemp(dir=work))
    elapsed = timed(["/usr/bin/getscu", "-S", "-aet", "GETSCU", "-aec", called, "-od", str(folder), "-k",
                     "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port)])
    got = count(folder)
    shutil.rmtree(folder)
    if got != expected:
        raise RuntimeError(f"C-GET from {called}: {got} of {expected} instances")
    return expected / elapsed


def move_rate(port: int, called: str, study: str, work: Path, dest_port: int, expected: int) -> float:
    folder = Path(tempfile.mkdtemp(dir=work))
    scp = subprocess.Popen(["/usr/bin/storescp", "-aet", DEST_AE, "-od", str(folder), str(dest_port)], env=env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        elapsed = timed(["/usr/bin/movescu", "-S", "-aet", "MOVESCU", "-aec", called, "-aem", DEST_AE, "-k",
                         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", str(port)])
    finally:
        scp.terminate()
        scp.wait(10)
    got = count(folder)
    shutil.rmtree(folder)
    if got != expected:
        raise RuntimeError(f"C-MOVE from {called}: {got} of {expected} instances")
    return expected / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engine", choices=("native", "pynetdicom"), default="native",
                        help="dicomflow's receiver engine (default: native, the default engine)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")

    base = LocalStack(load_settings(None, os.environ))
    base.up()
    work = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    suffix = uuid.uuid4().hex[:8]
    s0 = base.settings
    topics = dataclasses.replace(s0.topics, main=f"bq_{suffix}", log=f"bq_log_{suffix}", audit=f"bq_audit_{suffix}",
                                 dicom_state=f"bq_state_{suffix}", dicom_image=f"bq_image_{suffix}",
                                 dlq=f"bq_{suffix}.dlq", consumer_group_id=f"bq_{suffix}", partitions=2)
    dbname = f"bench_qr_{suffix}"
    admin = base.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                 sql.Identifier(s0.database.user)))
    dest_port = free_port()
    root = work / "storage"
    settings = dataclasses.replace(
        s0, topics=topics, database=dataclasses.replace(s0.database, dbname=dbname),
        storage=dataclasses.replace(s0.storage, root=root),
        receiver=dataclasses.replace(s0.receiver, engine=args.engine, host="127.0.0.1", port=free_port()),
        qr=QrSettings(enabled=True, destinations={DEST_AE: f"127.0.0.1:{dest_port}"}),
    )
    orthanc: OrthancDimse | None = None
    receiver: Receiver | None = None
    try:
        create_topics(settings.kafka, topics)
        with PgStore(settings.database) as store:
            store.migrate()
        corpus = make_corpus(root, args.instances, studies=1, series_per_study=4)
        with Publisher(settings.kafka, topics) as publisher:
            publisher.send_store_events(corpus.events).raise_for_failures()
        ConsumerService(settings, until_idle_s=3.0).run()
        study = corpus.events[0].study_uid
        n = len(corpus.events)
        orthanc = OrthancDimse(work, dest_port)
        paths = [Path(e.file_path) if Path(e.file_path).is_absolute() else root / e.file_path for e in corpus.events]
        loaded = orthanc.load(paths)
        if loaded != n:
            raise RuntimeError(f"Orthanc loaded {loaded} of {n}")
        receiver = Receiver(settings)
        receiver.start(announce=False)
        port = settings.receiver.port
        rows: dict[str, list[float]] = {k: [] for k in ("get-ours", "get-orthanc", "move-ours", "move-orthanc")}
        cpu: dict[str, list[float]] = {k: [] for k in rows}
        client: dict[str, list[float]] = {k: [] for k in rows}
        pids = {"ours": os.getpid(), "orthanc": orthanc.process.pid}
        targets = {"ours": (port, "DICOMFLOW"), "orthanc": (orthanc.dicom_port, "ORTHANC")}
        for r in range(args.rounds):
            for op in ("get", "move"):
                for side in ("ours", "orthanc"):
                    before, before_client = cpu_s(pids[side]), children_cpu_s()
                    if op == "get":
                        rows[f"{op}-{side}"].append(get_rate(*targets[side], study, work, n))
                    else:
                        rows[f"{op}-{side}"].append(move_rate(*targets[side], study, work, dest_port, n))
                    cpu[f"{op}-{side}"].append((cpu_s(pids[side]) - before) / n * 1000)
                    client[f"{op}-{side}"].append((children_cpu_s() - before_client) / n * 1000)
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}/s ({cpu[k][-1]:.1f} ms CPU)"
                                                 for k, v in rows.items()), flush=True)
        print(f"\n{n} instances, one study, {args.rounds} alternated rounds (median instances/s), "
              f"{args.engine} engine, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
        print(f"{'measure':30} {'dicomflow':>10} {'Orthanc':>10} {'ratio':>7}  target >= 1.5x")
        ok = True
        for op in ("get", "move"):
            ours, theirs = statistics.median(rows[f"{op}-ours"]), statistics.median(rows[f"{op}-orthanc"])
            ratio = ours / theirs
            ok = ok and ratio >= 1.5
            label = "C-GET (getscu)" if op == "get" else "C-MOVE (movescu -> storescp)"
            print(f"{label:30} {ours:10.0f} {theirs:10.0f} {ratio:6.2f}x  {'PASS' if ratio >= 1.5 else 'FAIL'}")
            print(f"{'  server CPU ms / instance':30} {statistics.median(cpu[f'{op}-ours']):10.2f} "
                  f"{statistics.median(cpu[f'{op}-orthanc']):10.2f}")
            print(f"{'  client CPU ms / instance':30} {statistics.median(client[f'{op}-ours']):10.2f} "
                  f"{statistics.median(client[f'{op}-orthanc']):10.2f}")
            print(f"{'  wall ms / instance':30} {1000 / ours:10.2f} {1000 / theirs:10.2f}")
        return 0 if ok else 1
    finally:
        if receiver is not None:
            receiver.stop(announce=False)
        if orthanc is not None:
            orthanc.stop()
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
