"""C-STORE receive rate: dicomflow scp versus Orthanc, same corpus, same client, same run.

    python benchmarks/bench_receiver.py [--instances 2000] [--processes 2] [--repeat 1]
                                        [--engines native,pynetdicom] [--no-fsync] [--no-tls]
                                        [--work-dir /tmp/dicomflow-bench-receiver] [--brokers 3]
                                        [--rows standard,nagle,s3,breakdown,ack] [--nagle-instances 400]
                                        [--ack kafka|journal] [--breakdown-four]

The client is dcmtk's ``storescu`` (``TCP_NODELAY=1``, the receivers get it
too), sending a corpus of ``--instances`` real DICOM files (pydicom's CT and
MR samples with fresh UIDs, 10-40 kB) written under ``--work-dir``:

* **1 association**: one storescu sends every file;
* **4 associations**: four storescu processes send a quarter each, at once.

Receivers, each started fresh (empty storage, empty index) for every run:

* **dicomflow scp** (``dicomflow scp --processes N``, fsync on), with each
  network engine of ``--engines`` (native, the default, and pynetdicom): an
  instance counts once its file is durable and Kafka (the local broker,
  acks=all) acknowledged its store event and receipt: that is when it
  answers Success;
* **dicomflow scp over mutual TLS** (the first engine; storescu ``+tls``
  with a client certificate, TLS 1.2+/BCP 195, certificates made with
  openssl for the run): its cost is printed as TLS / plain, same run;
* **Orthanc, default index** (SQLite, ``SyncStorageArea`` on);
* **Orthanc, PostgreSQL index** (``orthanc-postgresql`` plugin, a fresh
  database in the local PostgreSQL).

Orthanc comes from Debian's packages (installed with apt-get when missing)
and listens on free local ports with its own configuration in a temporary
folder. Rate = instances / wall time from the first storescu start to the
last storescu exit; each run is checked afterwards (files and events read
back for dicomflow, instance count over REST for Orthanc) so no figure counts
a lost instance. With ``--repeat`` > 1 the median run is reported.

Targets: one association >= 1.5x Orthanc (default index); four
associations >= 1.5x Orthanc (default index). The PostgreSQL-index ratios
are printed too. Memory: the dicomflow receiver's resident memory (the
dispatcher and its workers together) is sampled during each run; "per
association" is the peak above the idle figure, divided by the associations.

With ``--brokers 3`` the first dicomflow engine runs once more (1 and 4
associations) against a private three-broker cluster (topics with
replication factor 3 and min.insync.replicas 2, acks=all as always): its rate
is reported against the single-broker run of the same invocation (a
comparison, not a target).

**A sender that leaves Nagle on** (``--rows nagle``; ``standard`` is all of
the above): storescu *without* ``TCP_NODELAY`` in its environment, as a
hospital's sender runs it (Debian's dcmtk leaves Nagle's algorithm on unless
that variable says otherwise), sending ``--nagle-instances`` fresh instances
(a corpus of their own) to the first dicomflow engine, to the same engine
from the same storescu with ``TCP_NODELAY=1`` (the reference figure), and to
Orthanc (default index) started twice: with ``TCP_NODELAY=1`` in *its*
environment and without; 1 and 4 associations. Runs alternate (dicomflow,
dicomflow with TCP_NODELAY, Orthanc, Orthanc, dicomflow, ...), at least 3
rounds (``--repeat`` if more), medians compared. Targets: the Nagle-on sender
gets >= 0.90x the TCP_NODELAY sender's rate into dicomflow, and >= 10x
Orthanc's rate for the same sender.

**Storage backends** (``--rows s3``): the first engine with ``storage.backend
= "s3"`` (the stack's S3Proxy, started for it; each receiver a key prefix of
its own, its local receive spool under the work folder) against the same
engine on the filesystem (fsync on), the ``--instances`` corpus, 1 and 4
associations, at least 3 alternated rounds, medians. Target (issue 18): the
S3 backend within 1.5x of the filesystem's rate (s3 / filesystem >= 0.67);
the anchors lost 20-30x when they received straight into S3.

**dcmtk storescp** (``--fork``, no sync, no Kafka, no index) is measured in
the standard rows as the physical limit of the machine: dicomflow's ratio to
it is printed, no target.

**Breakdown** (``--rows breakdown``, issue 22): one association, at least 3
alternated rounds of: the first engine with ``receiver.stage_timing_dir``
set (each C-STORE timed stage by stage inside the receiver, records written
when it stops), the same engine without it (the instrumentation's cost is
on / off), dcmtk storescp, and a standalone script doing only the durable
write and the Kafka send (``_durable_send.py``, the same stages timed the
same way). Printed: the median rates, then per stage the median and mean
ms per instance over every instance of every timed run.

**Acknowledgement** (``--rows ack``, issue 22): the first engine with
``receiver.ack = "kafka"`` (Success once Kafka acknowledged) and with
``"journal"`` (Success once the receiver's local journal holds the event,
published from it afterwards; docs/receiver.md), Orthanc (default index)
and dcmtk storescp, 1 and 4 associations, at least 3 alternated rounds
(kafka, journal, Orthanc, storescp, kafka, ...), medians. Targets: each
ack >= 1.5x Orthanc. A journal run still counts an instance only once its
event and receipt are in Kafka (read back after the receiver stopped).
``--ack journal`` sets the journal for the other rows' dicomflow receivers
(with ``--rows breakdown --breakdown-four``: where the time goes with it);
``--journal-sync files`` their ``receiver.journal_sync``, and
``--journal-files`` adds a journal row with ``"files"`` to the ack rows
(one syncfs per group commit against an fdatasync per file).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dicomflow.blobs import BlobStore, open_store
from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.reader import read_all
from dicomflow.settings import Settings, default_config_path, load_settings
from dicomflow.stack import LocalStack, free_port, free_ports

STORESCU = "/usr/bin/storescu"
ECHOSCU = "/usr/bin/echoscu"
STORESCP = "/usr/bin/storescp"
ORTHANC = "/usr/sbin/Orthanc"
PG_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancPostgreSQLIndex.so")
NODELAY = {**os.environ, "TCP_NODELAY": "1"}
#: The environment of a sender (or of Orthanc) that leaves Nagle's algorithm on: dcmtk's default.
NAGLE = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
#: Rounds of the Nagle rows at least (alternated, medians compared).
NAGLE_ROUNDS = 3




def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def echo(port: int, called: str, flags: Sequence[str] = ()) -> bool:
    return subprocess.run([ECHOSCU, "-aec", called, *flags, "127.0.0.1", str(port)], env=NODELAY,
                          capture_output=True).returncode == 0


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server and a client certificate (EC P-256) made with openssl for the TLS rows; never kept."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=bench CA", "-days", "1")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=bench {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "1")
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def ensure_orthanc(postgres: bool = True) -> None:
    """Install Orthanc (and its PostgreSQL plugin, when its rows run) from the distribution when missing."""
    wanted = [("orthanc", Path(ORTHANC)), *((("orthanc-postgresql", PG_PLUGIN),) if postgres else ())]
    missing = [pkg for pkg, path in wanted if not path.exists()]
    if missing:
        print(f"installing {' '.join(missing)} with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *missing], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


# --------------------------------------------------------------------------- receivers


class Receiver(AbstractContextManager["Receiver"]):
    """A receiver under test: started fresh, counted afterwards, stopped."""

    name = ""
    called_ae = ""
    port = 0
    #: storescu / echoscu options every client needs (TLS).
    client_flags: tuple[str, ...] = ()

    def count(self) -> int:
        raise NotImplementedError

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        raise NotImplementedError


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Dicomflow(Receiver):
    called_ae = "DICOMFLOW"

    def __init__(self, settings: Settings, work: Path, processes: int, fsync: bool, engine: str,
                 tls: dict[str, Path] | None = None, *, s3: bool = False, stages: bool = False,
                 ack: str = "kafka", journal_sync: str = "filesystem") -> None:
        self.settings = settings
        sync = f" ({journal_sync})" if ack == "journal" else ""
        self.name = (f"dicomflow scp ({engine}, {processes} processes{'' if fsync else ', no fsync'}, ack={ack}{sync}"
                     f"{', mutual TLS' if tls else ''}{', s3' if s3 else ''}{', stage timing' if stages else ''})")
        self.port = free_port()
        suffix = uuid.uuid4().hex[:8]
        self.topics = dataclasses.replace(
            settings.topics, main=f"bench_rcv_{suffix}", log=f"bench_rcv_log_{suffix}",
            audit=f"bench_rcv_audit_{suffix}", dicom_state=f"bench_rcv_state_{suffix}",
            dicom_image=f"bench_rcv_image_{suffix}", dlq=f"bench_rcv_{suffix}.dlq", partitions=6,
        )
        self.storage = work / f"dicomflow-storage-{suffix}"
        #: receiver.stage_timing_dir (issue 22's breakdown): the per-instance stage records, read after it stops.
        self.stage_dir = work / f"dicomflow-stages-{suffix}" if stages else None
        self.stage_records: list[dict[str, int]] = []
        create_topics(settings.kafka, self.topics)
        self.log = (work / f"dicomflow-{suffix}.log").open("wb")
        env = {
            **NODELAY,
            "DICOMFLOW_KAFKA_BROKERS": settings.kafka.brokers,
            "DICOMFLOW_TOPICS_MAIN": self.topics.main,
            "DICOMFLOW_TOPICS_LOG": self.topics.log,
            "DICOMFLOW_TOPICS_AUDIT": self.topics.audit,
            "DICOMFLOW_STORAGE_ROOT": str(self.storage),
            "DICOMFLOW_INGEST_FSYNC": "true" if fsync else "false",
            "DICOMFLOW_RECEIVER_ENGINE": engine,
            "DICOMFLOW_RECEIVER_ACK": ack,
            "DICOMFLOW_RECEIVER_JOURNAL_SYNC": journal_sync,
        }
        if self.stage_dir is not None:
            env["DICOMFLOW_RECEIVER_STAGE_TIMING_DIR"] = str(self.stage_dir)
        self.blobs: BlobStore | None = None
        if s3:  # the stack's S3Proxy, a key prefix of this receiver's own; the spool beside the storage root
            s3_settings = dataclasses.replace(settings.storage.s3, prefix=f"bench-rcv-{suffix}/")
            self.blobs = open_store(dataclasses.replace(settings.storage, backend="s3", s3=s3_settings))
            env.update({
                "DICOMFLOW_STORAGE_BACKEND": "s3",
                "DICOMFLOW_STORAGE_SPOOL": str(work / f"dicomflow-spool-{suffix}"),
                "DICOMFLOW_STORAGE_S3_ENDPOINT": s3_settings.endpoint,
                "DICOMFLOW_STORAGE_S3_BUCKET": s3_settings.bucket,
                "DICOMFLOW_STORAGE_S3_REGION": s3_settings.region,
                "DICOMFLOW_STORAGE_S3_PREFIX": s3_settings.prefix,
                "DICOMFLOW_STORAGE_S3_ACCESS_KEY_ID": s3_settings.access_key_id,
                "DICOMFLOW_STORAGE_S3_SECRET_ACCESS_KEY": s3_settings.secret_access_key,
                "DICOMFLOW_STORAGE_S3_PATH_STYLE": "true" if s3_settings.path_style else "false",
            })
        if tls:  # the main port speaks TLS 1.2+ (BCP 195), client certificates required
            env.update({
                "DICOMFLOW_RECEIVER_TLS_CERT_FILE": str(tls["server.pem"]),
                "DICOMFLOW_RECEIVER_TLS_KEY_FILE": str(tls["server.key"]),
                "DICOMFLOW_RECEIVER_TLS_CA_FILE": str(tls["ca.pem"]),
            })
            self.client_flags = ("+tls", str(tls["client.key"]), str(tls["client.pem"]), "+cf", str(tls["ca.pem"]))
        env.pop("DICOMFLOW_CONFIG", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dicomflow.cli", "--log-level", "INFO", "scp", "--port", str(self.port),
             "--processes", str(processes)],
            env=env, cwd=work, stdout=self.log, stderr=self.log,
        )
        log_path = Path(self.log.name)
        ready = "receiver workers ready" if processes > 1 else "listening on"
        wait_until(lambda: ready in log_path.read_text(errors="replace") or self.process.poll() is not None,
                   "dicomflow scp to start")
        if self.process.poll() is not None:
            raise RuntimeError(f"dicomflow scp exited: {log_path.read_text()[-2000:]}")

    def _objects(self) -> list[str]:
        if self.blobs is None:
            return [str(p) for p in self.storage.rglob("*.dcm")]
        return [i.key for i in self.blobs.list() if i.key.endswith(".dcm") and not Path(i.key).name.startswith(".")]

    def count(self) -> int:
        files = len(self._objects())
        events = len(read_all(self.settings.kafka, self.topics.main, timeout_s=120))
        receipts = len(read_all(self.settings.kafka, self.topics.log, timeout_s=120))
        if not files == events == receipts:
            raise RuntimeError(f"dicomflow: {files} files, {events} store events, {receipts} receipts")
        return files

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
        if self.stage_dir is not None:  # one file per receiver process, written as it stopped
            for path in sorted(self.stage_dir.glob("stages-*.json")):
                self.stage_records += json.loads(path.read_text())["records"]
            shutil.rmtree(self.stage_dir, ignore_errors=True)
        delete_topics(self.settings.kafka, self.topics.all())
        shutil.rmtree(self.storage, ignore_errors=True)
        if self.blobs is not None:
            for info in list(self.blobs.list()):
                self.blobs.delete(info.key)


class Orthanc(Receiver):
    called_ae = "ORTHANC"

    def __init__(self, work: Path, *, postgres: Settings | None = None, env: dict[str, str] = NODELAY) -> None:
        self.name = "Orthanc, PostgreSQL index" if postgres else "Orthanc, default index"
        if env is not NODELAY:
            self.name += ", TCP_NODELAY unset in its environment"
        self.port, self.http = free_ports(2)
        suffix = uuid.uuid4().hex[:8]
        self.folder = work / f"orthanc-{suffix}"
        self.folder.mkdir()
        config: dict[str, object] = {
            "Name": f"bench-{suffix}", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "DicomAet": self.called_ae, "DicomPort": self.port,
            "HttpPort": self.http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "DicomAlwaysAllowStore": True, "DicomCheckCalledAet": False, "HttpServerEnabled": True,
            "StorageCompression": False, "SyncStorageArea": True, "Plugins": [],
        }
        self.database: str | None = None
        self.admin: str | None = None
        if postgres is not None:
            self.database = f"orthanc_bench_{suffix}"
            self.admin = LocalStack(postgres).postgres.admin_conninfo()
            self._sql("CREATE DATABASE {} OWNER {}", self.database, postgres.database.user)
            config["Plugins"] = [str(PG_PLUGIN)]
            config["PostgreSQL"] = {
                "EnableIndex": True, "EnableStorage": False, "Host": "127.0.0.1", "Port": postgres.database.port,
                "Database": self.database, "Username": postgres.database.user,
                "Password": postgres.database.password, "Lock": False,
            }
        (self.folder / "config.json").write_text(json.dumps(config, indent=2))
        self.log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "config.json")], env=env,
                                        stdout=self.log, stderr=self.log, cwd=self.folder)
        wait_until(lambda: self._statistics() is not None or self.process.poll() is not None, "Orthanc to start")
        if self.process.poll() is not None:
            raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()[-2000:]}")

    def _sql(self, template: str, *identifiers: str) -> None:
        """Run a statement whose only variable parts are identifiers (quoted by psycopg)."""
        import psycopg
        from psycopg import sql

        assert self.admin is not None
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL(template).format(*(sql.Identifier(i) for i in identifiers)))

    def _statistics(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/statistics", timeout=5) as response:
                data = json.loads(response.read())
                return data if isinstance(data, dict) else None
        except OSError:
            return None

    def count(self) -> int:
        stats = self._statistics()
        if stats is None:
            raise RuntimeError("Orthanc does not answer")
        return int(str(stats["CountInstances"]))

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
        if self.database is not None:
            self._sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.database)
        shutil.rmtree(self.folder, ignore_errors=True)


class StoreScp(Receiver):
    """dcmtk's storescp: receive and write, no index, no Kafka, no sync: the physical limit of this machine."""

    called_ae = "STORESCP"
    name = "dcmtk storescp (--fork, no sync, no Kafka)"

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.folder = work / f"storescp-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir()
        self.log = (self.folder.parent / f"{self.folder.name}.log").open("wb")
        self.process = subprocess.Popen([STORESCP, "--fork", "+xa", "-od", str(self.folder), str(self.port)],
                                        env=NODELAY, stdout=self.log, stderr=self.log, cwd=work)

    def count(self) -> int:
        return sum(1 for p in self.folder.iterdir() if p.is_file())

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Result:
    receiver: str
    associations: int
    instances: int
    seconds: float
    #: Resident memory of the receiver's processes: idle before the run, peak during it (KiB; 0: not measured).
    idle_kib: int = 0
    peak_kib: int = 0
    #: Per-instance stage times inside the receiver (ns; dicomflow with stage timing on, or the standalone script).
    stages: tuple[dict[str, int], ...] = ()

    @property
    def per_association_mib(self) -> float:
        return max(0, self.peak_kib - self.idle_kib) / 1024 / self.associations

    @property
    def rate(self) -> float:
        return self.instances / self.seconds


def send(receiver: Receiver, folders: Sequence[Path], associations: int, sender: dict[str, str] = NODELAY) -> float:
    """storescu(s) with environment ``sender`` against the receiver; returns the wall time. Raises when a store failed."""
    wait_until(lambda: echo(receiver.port, receiver.called_ae, receiver.client_flags),
               f"{receiver.name} to answer C-ECHO")
    groups = [list(folders)] if associations == 1 else [[f] for f in folders]
    started = time.perf_counter()
    clients = [
        subprocess.Popen([STORESCU, "-aec", receiver.called_ae, *receiver.client_flags, "127.0.0.1",
                          str(receiver.port), "+sd", "+r",
                          *map(str, group)], env=sender, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for group in groups
    ]
    errors = [c.communicate()[1] for c in clients]
    elapsed = time.perf_counter() - started
    for client, err in zip(clients, errors, strict=True):
        if client.returncode != 0:
            raise RuntimeError(f"storescu failed against {receiver.name}: {err.decode(errors='replace')[-2000:]}")
    return elapsed


def tree_rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (KiB)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    total = 0
    for p in [pid, *map(int, out.split())]:
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


def measure(make: Callable[[], Receiver], folders: Sequence[Path], associations: int, expected: int,
            sender: dict[str, str] = NODELAY) -> Result:
    with make() as receiver:
        process = getattr(receiver, "process", None)
        pid = process.pid if isinstance(receiver, Dicomflow) and process is not None else None
        idle = tree_rss_kib(pid) if pid else 0
        peak = [idle]
        done = threading.Event()

        def sample() -> None:
            while pid and not done.wait(0.1):
                peak[0] = max(peak[0], tree_rss_kib(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            seconds = send(receiver, folders, associations, sender)
        finally:
            done.set()
            sampler.join()
        received = receiver.count()
        if received != expected:
            raise RuntimeError(f"{receiver.name}: {received} instances received, {expected} sent")
        result = Result(receiver.name, associations, expected, seconds, idle, peak[0])
    if isinstance(receiver, Dicomflow) and receiver.stage_records:
        result = dataclasses.replace(result, stages=tuple(receiver.stage_records))
    return result


@dataclass(frozen=True)
class Bench:
    """What every row needs: the options, the settings, the work folder."""

    args: argparse.Namespace
    settings: Settings
    work: Path

    @property
    def engines(self) -> list[str]:
        return [e.strip() for e in self.args.engines.split(",") if e.strip()]

    def dicomflow(self, engine: str, certificates: dict[str, Path] | None = None, *,
                  s3: bool = False, stages: bool = False, ack: str | None = None,
                  journal_sync: str | None = None) -> Callable[[], Receiver]:
        return lambda: Dicomflow(self.settings, self.work, self.args.processes, not self.args.no_fsync, engine,
                                 certificates, s3=s3, stages=stages, ack=ack or self.args.ack,
                                 journal_sync=journal_sync or self.args.journal_sync)


def make_folders(root: Path, instances: int) -> tuple[list[Path], int]:
    """Four client folders of fresh instances under ``root`` (a quarter each); the folders and their total."""
    per_client = instances // 4
    folders = []
    for client in range(4):
        folder = root / f"client{client}"
        make_corpus(folder, per_client, studies=max(1, per_client // 100), series_per_study=4)
        folders.append(folder)
    total = per_client * 4
    size_mb = sum(f.stat().st_size for f in root.rglob("*.dcm")) / 1e6
    print(f"corpus: {total} instances, {size_mb:.1f} MB ({size_mb * 1000 / total:.1f} kB each) in {root}")
    return folders, total


def print_run(label: str, associations: int, result: Result, runs: Sequence[Result]) -> None:
    spread = f" (runs: {', '.join(f'{r.rate:.0f}' for r in runs)})" if len(runs) > 1 else ""
    memory = (f", RSS {result.idle_kib / 1024:.0f} -> {result.peak_kib / 1024:.0f} MiB, "
              f"{result.per_association_mib:.1f} MiB per association" if result.peak_kib else "")
    print(f"  {label:<44} {associations} association(s): {result.rate:7.1f} instances/s "
          f"({result.seconds:.1f} s{memory}){spread}", flush=True)


def median(runs: Sequence[Result]) -> Result:
    return sorted(runs, key=lambda r: r.rate)[len(runs) // 2]


#: One row of an alternated comparison: key, label, the receiver's factory, the sender's environment.
Row = tuple[str, str, Callable[[], Receiver], dict[str, str]]


def alternated(rows: Sequence[Row], folders: Sequence[Path], total: int, rounds: int,
               heading: str) -> dict[tuple[str, int], float]:
    """Each row on 1 and on 4 associations, ``rounds`` rounds alternated; the medians' rates, printed and returned.

    Alternated (ours, the anchors, ours, ...) so that a noisy minute hits every row alike. The rates are keyed
    by (row key, associations) and printed as a table under the column ``heading``.
    """
    rate: dict[tuple[str, int], float] = {}
    for associations in (1, 4):
        runs: dict[str, list[Result]] = {key: [] for key, *_ in rows}
        for _ in range(rounds):
            for key, _label, make, sender in rows:
                runs[key].append(measure(make, folders, associations, total, sender))
        for key, label, *_ in rows:
            result = median(runs[key])
            rate[(key, associations)] = result.rate
            print_run(label, associations, result, runs[key])
    print()
    print(f"{heading:<46}{'1 association':>16}{'4 associations':>17}")
    for key, label, *_ in rows:
        print(f"{label:<46}{rate[(key, 1)]:>12.1f}/s  {rate[(key, 4)]:>12.1f}/s")
    return rate


def standard_rows(bench: Bench) -> None:
    """dicomflow's engines (and TLS) against Orthanc's two indexes, storescu with TCP_NODELAY=1."""
    args, settings, work, engines = bench.args, bench.settings, bench.work, bench.engines
    folders, total = make_folders(work / "corpus", args.instances)
    version = subprocess.run([STORESCU, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    print(f"client: {version.strip('$ ')} with TCP_NODELAY=1; load average before: {os.getloadavg()[0]:.2f}")
    certificates = None if args.no_tls else make_certificates(work / "tls")
    receivers: list[tuple[str, Callable[[], Receiver]]] = [
        *((f"dicomflow-{engine}", bench.dicomflow(engine)) for engine in engines),
        *(((f"dicomflow-{engines[0]}-tls", bench.dicomflow(engines[0], certificates)),) if certificates else ()),
        ("orthanc", lambda: Orthanc(work)),
        ("orthanc-pg", lambda: Orthanc(work, postgres=settings)),
        ("storescp", lambda: StoreScp(work)),
    ]
    compared = f"dicomflow-{engines[0]}"
    results: dict[tuple[str, int], Result] = {}
    for associations in (1, 4):
        for key, make in receivers:
            runs = [measure(make, folders, associations, total) for _ in range(max(1, args.repeat))]
            results[(key, associations)] = median(runs)
            print_run(results[(key, associations)].receiver, associations, results[(key, associations)], runs)

    print()
    print(f"{'receiver':<46}{'1 association':>16}{'4 associations':>17}")
    for key, _ in receivers:
        one, four = results[(key, 1)], results[(key, 4)]
        print(f"{one.receiver:<46}{one.rate:>12.1f}/s  {four.rate:>12.1f}/s")
    rate = {k: r.rate for k, r in results.items()}
    checks = [
        ("1 association: dicomflow / Orthanc-default", rate[(compared, 1)] / rate[("orthanc", 1)], 1.5),
        ("4 associations: dicomflow / Orthanc-default", rate[(compared, 4)] / rate[("orthanc", 4)], 1.5),
        ("1 association: dicomflow / Orthanc-PostgreSQL", rate[(compared, 1)] / rate[("orthanc-pg", 1)], 1.5),
        ("4 associations: dicomflow / Orthanc-PostgreSQL", rate[(compared, 4)] / rate[("orthanc-pg", 4)], 2.0),
    ]
    print()
    print(f"ratios for {results[(compared, 1)].receiver}:")
    print_checks(checks)
    for n in (1, 4):
        print(f"{n} association(s): dicomflow / dcmtk storescp (the physical limit): "
              f"{rate[(compared, n)] / rate[('storescp', n)]:.2f}x")
    if certificates:
        for associations in (1, 4):
            tls_rate = rate[(f"{compared}-tls", associations)]
            print(f"TLS cost, {associations} association(s): {tls_rate:.1f}/s over TLS vs {rate[(compared, associations)]:.1f}/s "
                  f"plain ({tls_rate / rate[(compared, associations)]:.2f}x)")
    if args.brokers > 1:
        cluster_rows(bench, folders, total, rate, compared)


def print_checks(checks: Sequence[tuple[str, float, float]]) -> None:
    width = max(50, *(len(label) for label, _, _ in checks))
    for label, ratio, target in checks:
        verdict = "met" if ratio >= target else "NOT met"
        print(f"{label:<{width}} {ratio:5.2f}x  (target >= {target}x: {verdict})")


def cluster_rows(bench: Bench, folders: Sequence[Path], total: int, rate: dict[tuple[str, int], float],
                 compared: str) -> None:
    """The first engine once more against a private cluster of ``--brokers`` brokers."""
    from _cluster import private_cluster

    args = bench.args
    print()
    with private_cluster(bench.settings, args.brokers) as clustered:
        for associations in (1, 4):
            r = measure(lambda: Dicomflow(clustered, bench.work, args.processes, not args.no_fsync, bench.engines[0]),
                        folders, associations, total)
            single = rate[(compared, associations)]
            print(f"  {r.receiver} on {args.brokers} brokers (RF 3, min ISR 2), {associations} association(s): "
                  f"{r.rate:7.1f} instances/s = {r.rate / single:.2f}x the single-broker {single:.1f}/s",
                  flush=True)


def nagle_rows(bench: Bench) -> None:
    """A sender that leaves Nagle on: dicomflow (and the same sender with TCP_NODELAY) vs Orthanc, alternated."""
    args, work, engine = bench.args, bench.work, bench.engines[0]
    print()
    print("a sender that leaves Nagle on: storescu without TCP_NODELAY in its environment")
    folders, total = make_folders(work / "nagle-corpus", args.nagle_instances)
    # key -> (label, receiver, the sender's environment)
    rows: list[Row] = [
        ("dicomflow", f"dicomflow ({engine}), Nagle-on sender", bench.dicomflow(engine), NAGLE),
        ("dicomflow-nodelay", f"dicomflow ({engine}), TCP_NODELAY=1 sender", bench.dicomflow(engine), NODELAY),
        ("orthanc", "Orthanc (env TCP_NODELAY=1), Nagle-on sender", lambda: Orthanc(work), NAGLE),
        ("orthanc-unset", "Orthanc (env unset), Nagle-on sender", lambda: Orthanc(work, env=NAGLE), NAGLE),
    ]
    rounds = max(NAGLE_ROUNDS, args.repeat)
    rate = alternated(rows, folders, total, rounds, "receiver, sender")
    print()
    print(f"ratios for the Nagle-on sender, medians of {rounds} alternated rounds:")
    print_checks([
        *((f"{n} association(s): dicomflow, Nagle-on / TCP_NODELAY sender",
           rate[("dicomflow", n)] / rate[("dicomflow-nodelay", n)], 0.9) for n in (1, 4)),
        *((f"{n} association(s): dicomflow / Orthanc (env TCP_NODELAY=1)",
           rate[("dicomflow", n)] / rate[("orthanc", n)], 10.0) for n in (1, 4)),
        *((f"{n} association(s): dicomflow / Orthanc (env unset)",
           rate[("dicomflow", n)] / rate[("orthanc-unset", n)], 10.0) for n in (1, 4)),
    ])


def s3_rows(bench: Bench) -> None:
    """The first engine on the s3 backend (the stack's S3Proxy) against itself on the filesystem, alternated."""
    args, work, engine = bench.args, bench.work, bench.engines[0]
    print()
    print("storage backends: the same receiver on the filesystem (fsync) and on S3 (S3Proxy, through the spool)")
    folders, total = make_folders(work / "s3-corpus", args.instances)
    rows: list[Row] = [("filesystem", "filesystem", bench.dicomflow(engine), NODELAY),
                       ("s3", "s3", bench.dicomflow(engine, s3=True), NODELAY)]
    rounds = max(NAGLE_ROUNDS, args.repeat)
    rate = alternated(rows, folders, total, rounds, "backend")
    print()
    print(f"s3 / filesystem, medians of {rounds} alternated rounds (within 1.5x: ratio >= 0.67):")
    print_checks([(f"{n} association(s): s3 / filesystem", rate[("s3", n)] / rate[("filesystem", n)], 0.67)
                  for n in (1, 4)])
    shutil.rmtree(work / "s3-corpus", ignore_errors=True)


def breakdown_rows(bench: Bench) -> None:
    """Issue 22: where each instance's time goes, inside the receiver and in a standalone write + send; storescp."""
    from _stage_table import stage_table

    args, work, engine = bench.args, bench.work, bench.engines[0]
    print()
    print("breakdown (issue 22): 1 association, per-instance stages inside the receiver (receiver.stage_timing_dir)")
    folders, total = make_folders(work / "breakdown-corpus", args.instances)
    files = sorted(p for f in folders for p in f.rglob("*.dcm"))
    rows: list[tuple[str, Callable[[], Receiver]]] = [
        ("on", bench.dicomflow(engine, stages=True)),
        ("off", bench.dicomflow(engine)),
        ("storescp", lambda: StoreScp(work)),
    ]
    runs: dict[str, list[Result]] = {key: [] for key, _ in [*rows, ("standalone", None)]}
    for _ in range(max(NAGLE_ROUNDS, args.repeat)):  # alternated: a noisy minute hits every row alike
        for key, make in rows:
            runs[key].append(measure(make, folders, 1, total))
        runs["standalone"].append(standalone(bench, files))
    for key, _ in [*rows, ("standalone", None)]:
        result = median(runs[key])
        print_run(result.receiver, 1, result, runs[key])
    on, off, scp = (median(runs[k]) for k in ("on", "off", "storescp"))
    print()
    print(f"stage timing overhead: {on.rate:.1f}/s on vs {off.rate:.1f}/s off ({on.rate / off.rate:.3f}x); "
          f"ms per instance: dicomflow {1000 / off.rate:.2f} (timing off), storescp {1000 / scp.rate:.2f}, "
          f"standalone write + send {1000 / median(runs['standalone']).rate:.2f}")
    print()
    columns = {
        f"dicomflow scp ({engine}), 1 assoc.": [r for run in runs["on"] for r in run.stages],
        "standalone write + Kafka send": [r for run in runs["standalone"] for r in run.stages],
    }
    if args.breakdown_four:  # the same receiver, timed, with 4 associations at once (alternated with storescp)
        four: dict[str, list[Result]] = {"on": [], "storescp": []}
        for _ in range(max(NAGLE_ROUNDS, args.repeat)):
            for key, make in rows:
                if key in four:
                    four[key].append(measure(make, folders, 4, total))
        for key in four:
            print_run(median(four[key]).receiver, 4, median(four[key]), four[key])
        print()
        columns[f"dicomflow scp ({engine}), 4 assoc."] = [r for run in four["on"] for r in run.stages]
    for line in stage_table(columns):
        print(line)
    shutil.rmtree(work / "breakdown-corpus", ignore_errors=True)


def ack_rows(bench: Bench) -> None:
    """Issue 22: receiver.ack = kafka and = journal against Orthanc (default index) and storescp, alternated, medians."""
    args, work, engine = bench.args, bench.work, bench.engines[0]
    print()
    print("ack rows (issue 22): receiver.ack = kafka / journal, Orthanc (default index), dcmtk storescp; "
          f"alternated rounds, medians; load average before: {os.getloadavg()[0]:.2f}")
    folders, total = make_folders(work / "ack-corpus", args.instances)
    rows: list[Row] = [
        ("kafka", f"dicomflow ({engine}), ack=kafka", bench.dicomflow(engine, ack="kafka"), NODELAY),
        ("journal", f"dicomflow ({engine}), ack=journal", bench.dicomflow(engine, ack="journal"), NODELAY),
        *((("journal-files", f"dicomflow ({engine}), ack=journal, journal_sync=files",
            bench.dicomflow(engine, ack="journal", journal_sync="files"), NODELAY),) if args.journal_files else ()),
        ("orthanc", "Orthanc (default index)", lambda: Orthanc(work), NODELAY),
        ("storescp", "dcmtk storescp", lambda: StoreScp(work), NODELAY),
    ]
    rate = alternated(rows, folders, total, max(NAGLE_ROUNDS, args.repeat), "receiver")
    print()
    acks = [key for key, *_ in rows if key.startswith(("kafka", "journal"))]
    print_checks([(f"{n} association(s): dicomflow ack={ack} / Orthanc-default", rate[(ack, n)] / rate[("orthanc", n)], 1.5)
                  for ack in acks for n in (1, 4)])
    for n in (1, 4):
        print(f"{n} association(s): journal / kafka {rate[('journal', n)] / rate[('kafka', n)]:.2f}x; "
              f"dicomflow ack=journal / dcmtk storescp (the physical limit) "
              f"{rate[('journal', n)] / rate[('storescp', n)]:.2f}x")
    shutil.rmtree(work / "ack-corpus", ignore_errors=True)


def standalone(bench: Bench, files: Sequence[Path]) -> Result:
    """One run of the standalone durable write + Kafka send (benchmarks/_durable_send.py) on fresh topics."""
    from _durable_send import durable_send

    suffix = uuid.uuid4().hex[:8]
    topics = dataclasses.replace(bench.settings.topics, main=f"bench_dur_{suffix}", log=f"bench_dur_log_{suffix}",
                                 audit=f"bench_dur_audit_{suffix}", partitions=6)
    create_topics(bench.settings.kafka, topics)
    root = bench.work / f"durable-{suffix}"
    try:
        seconds, records = durable_send(bench.settings, topics, root, files, fsync=not bench.args.no_fsync)
    finally:
        delete_topics(bench.settings.kafka, topics.all())
        shutil.rmtree(root, ignore_errors=True)
    return Result("standalone durable write + Kafka send", 1, len(records), seconds, stages=tuple(records))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="corpus size (split in four for 4 associations)")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 2, help="dicomflow receiver processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs per configuration; the median is reported")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/dicomflow-bench-receiver"))
    parser.add_argument("--no-fsync", action="store_true", help="dicomflow without fsync (not the compared figure)")
    parser.add_argument("--no-tls", action="store_true", help="skip the TLS rows (the first engine over mutual TLS)")
    parser.add_argument("--engines", default="native,pynetdicom",
                        help="dicomflow network engines to measure; the first one is compared with the targets")
    parser.add_argument("--brokers", type=int, default=1,
                        help="also measure the first engine against a private cluster of this many brokers (RF 3)")
    parser.add_argument("--rows", default="standard,nagle,s3",
                        help="which rows: standard (storescu with TCP_NODELAY=1), nagle (a sender that leaves Nagle on), "
                             "s3 (the s3 backend against the filesystem; starts the stack's S3Proxy), "
                             "breakdown (issue 22: per-instance stages inside the receiver, 1 association, against a "
                             "standalone durable write + Kafka send and dcmtk storescp), "
                             "ack (issue 22: receiver.ack = kafka and journal against Orthanc and storescp, alternated)")
    parser.add_argument("--nagle-instances", type=int, default=400,
                        help="corpus size of the nagle rows (Orthanc takes ~0.1 s per instance from such a sender)")
    parser.add_argument("--ack", choices=("kafka", "journal"), default="kafka",
                        help="receiver.ack of dicomflow in the standard, nagle, s3 and breakdown rows "
                             "(the ack rows measure both)")
    parser.add_argument("--journal-sync", choices=("filesystem", "files"), default="filesystem",
                        help="receiver.journal_sync of the journal receivers (the ack rows: their journal row)")
    parser.add_argument("--journal-files", action="store_true",
                        help="ack rows: also a journal row with receiver.journal_sync = \"files\"")
    parser.add_argument("--breakdown-four", action="store_true",
                        help="breakdown rows: also time the receiver's stages with 4 associations at once")
    args = parser.parse_args(argv)
    rows = {r.strip() for r in args.rows.split(",") if r.strip()}
    if not rows or rows - {"standard", "nagle", "s3", "breakdown", "ack"}:
        parser.error(f"--rows takes standard, nagle, s3, breakdown and/or ack, not {args.rows!r}")

    ensure_orthanc(postgres="standard" in rows)
    settings = load_settings(default_config_path(os.environ), os.environ)
    stack = LocalStack(settings)
    stack.up(s3=True if "s3" in rows else None)
    settings = LocalStack(settings).settings  # storage.s3 pointed at the stack's S3Proxy while it runs
    work = args.work_dir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    bench = Bench(args, settings, work)
    if "standard" in rows:
        standard_rows(bench)
    if "nagle" in rows:
        nagle_rows(bench)
    if "s3" in rows:
        s3_rows(bench)
    if "breakdown" in rows:
        breakdown_rows(bench)
    if "ack" in rows:
        ack_rows(bench)
    print(f"load average after: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    shutil.rmtree(work / "corpus", ignore_errors=True)
    shutil.rmtree(work / "nagle-corpus", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
