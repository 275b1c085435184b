"""DICOMweb: dicomflow web versus Orthanc's DICOMweb plugin, same machine, same run.

    python benchmarks/bench_web.py [--index-instances 100000] [--files 400] [--requests 400]

What is measured, for both servers:

* QIDO-RS study search latency (p50 / p99, one client) and throughput
  (searches/s, four clients) over a mix of PatientID, PatientName wildcard,
  StudyDate range, AccessionNumber and ModalitiesInStudy + date searches;
* WADO-RS instance retrieval throughput (instances/s and MB/s, four
  concurrent keep-alive clients, ``transfer-syntax=*`` so both send the
  stored bytes; three rounds over every instance, alternating between the
  servers) with two clients, and each server's CPU time per instance:
  httpx with its default headers (``Accept-Encoding: gzip, deflate``, as
  requests / dicomweb-client and browsers send: Orthanc then gzips every
  answer, dicomflow never compresses; the target is on this one, the client
  the benchmark has always used) and ``curl --parallel`` (no
  Accept-Encoding, so both send the bytes as they are; a C client, where
  the Python one spends about 1.2 ms of CPU per request itself);
* series metadata latency (p50 / p99, after a first warming request);
* the ``s3`` rows (``--no-s3`` leaves them out): a second ``dicomflow web``
  with ``storage.backend = "s3"``, its objects in the stack's S3Proxy (the
  same corpus, copied there by ``storage migrate`` into a copy of the index
  made before the bulk rows), measured in the same WADO-RS rounds as the
  filesystem server and Orthanc (alternating);
* issue 19's rows (``benchmarks/_web_rows.py``, three alternated runs,
  medians): the metadata of one ``--series-instances`` (500) instance series,
  also loaded into Orthanc, cold / new process / warm with and without gzip,
  on both backends; thumbnails (dicomflow ``/thumbnail``, Orthanc
  ``/rendered`` with ``viewport=128,128``: Orthanc has no thumbnail
  resource), first request and again; the OHIF viewer's time to its first
  image in headless Chromium.

``--rows`` picks some of qido, wado, metadata, big-metadata, thumbnail,
viewer (default: all).

The corpus: ``--files`` real DICOM files (pydicom's CT and MR samples with
new UIDs) are published and indexed by the real consumer, and given to
Orthanc over its REST API. dicomflow's index is then grown to
``--index-instances`` rows with COPY (studies of two series of five
instances, random names and dates), so its searches run over >= 100,000
instances. Orthanc gets the real files only: loading 100,000 instances into
it one POST at a time takes hours here. Its searches therefore run over a
much smaller index, which favours Orthanc; the comparison is conservative.

dicomflow runs with ``--workers 2`` (``--web-workers``: one process per core
of the 2-core reference machine; Orthanc serves with 4 HTTP threads) and
OAuth2 on (every request carries a signed token, checked as in production);
Orthanc without authentication. Next to the throughput the script prints
each server's CPU time per retrieved instance (all its processes and
threads, from /proc): on a shared, loaded machine that figure moves much
less than the wall-clock ones.
Targets: QIDO-RS p99 <= 50 ms and >= 2x Orthanc's search throughput;
WADO-RS retrieval >= 1.5x Orthanc's instances/s, on the filesystem and on
s3; the 500-instance series' metadata warm p50 and p99 <= 200 ms (issue 19),
p99 <= 50 ms on s3 with gzip accepted (issue 18); thumbnail p50 <= Orthanc's.

What the WADO-RS figure was made of (py-spy on the running server; same
corpus; server CPU per retrieved instance, one worker): 3.1 ms at first.
An audit task per request encoding and producing on the event loop and
keeping the producer's poll thread flushing (about a third); BEGIN / COMMIT
round trips around each one-query lookup; an RS256 check of the same token
on every request (about a tenth); three writes per multipart part; a worker
thread hop for every 25 kB read (a fifth); h11 and asyncio's pure-Python
loop; os.path.realpath's lstat of each of ten path components. With a
background audit sender (batches every 250 ms: at 20 ms its acknowledgement
waits took the GIL from the loop 5 times per request), autocommit, a
checked-token cache, one write per part, page-cache reads on the loop
(RWF_NOWAIT), the real path from /proc/self/fd and uvloop + httptools it is
about 0.8-0.95 ms (1.0-1.2 ms per instance with two workers in this
script's figures), three quarters of it user time in uvicorn, Starlette,
psycopg and the handler. Holding the response head to send it with the body
in one segment was tried and measured no cheaper.

Orthanc's CPU per instance is ~2.4 ms for the httpx client, ~1.0-1.1 ms for
curl: most of the former is gzip. Against curl the two servers are close
(0.9-1.3x in runs on the loaded 2-core machine).

``--workers 2`` used to cost 40-50 ms per request, /healthz included: the
shared listening socket was made with proto 0, accepted sockets inherit
it, and asyncio sets TCP_NODELAY only when proto is IPPROTO_TCP, so Nagle
held each body behind the unacknowledged headers until the client's delayed
ACK. The socket is now made with IPPROTO_TCP.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings, load_settings, to_child_env
from dicomflow.stack import LocalStack, free_port
from dicomflow.storage_migrate import MigrateOptions, Migration
from dicomflow.store import PgStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _web_rows import Contender, big_metadata, thumbnails, viewer_first_image

from tests.integration.web_support import AUDIENCE, ISSUER, Orthanc, make_keys

SURNAMES = ["SMITH", "JONES", "GARCIA", "MARTIN", "MULLER", "ROSSI", "DUBOIS", "TANAKA", "NGUYEN", "KOWALSKI",
            "SILVA", "JOHANSSON", "IVANOV", "OKAFOR", "HANSEN", "NOVAK", "PETERS", "LOPEZ", "BROWN", "WILSON"]
GIVEN = ["ANNA", "JOHN", "MARIA", "PETER", "LUCIA", "DAVID", "SARA", "PAUL", "EMMA", "KARL"]
MODALITIES = ["CT", "MR", "CR", "US", "DX", "PT"]
#: WADO-RS throughput rounds per server (each retrieves every real instance once).
WADO_ROUNDS = 3
#: What ``--rows`` can select.
ROWS = ("qido", "wado", "metadata", "big-metadata", "thumbnail", "viewer")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its direct children (the workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def bulk_index(settings: Settings, count: int, seed: int = 7) -> list[dict[str, str]]:
    """COPY ``count`` synthetic instances (2 series x 5 instances per study); returns query values to use."""
    rng = random.Random(seed)
    studies = count // 10
    now = dt.datetime.now()
    picks: list[dict[str, str]] = []
    with psycopg.connect(settings.database.conninfo()) as conn, conn.cursor() as cur:
        rows_state, rows_image = [], []
        for s in range(studies):
            study = f"1.2.826.0.1.3680043.10.1.{s}.{seed}"
            patient = f"PB{s % (studies // 2 + 1):07d}"
            name = f"{rng.choice(SURNAMES)}^{rng.choice(GIVEN)}"
            day = dt.date(2015, 1, 1) + dt.timedelta(days=rng.randrange(3650))
            accession = f"ACC{s:09d}"
            mods = rng.sample(MODALITIES, 2)
            for k in range(2):
                series = f"{study}.{k + 1}"
                rows_state.append(("default", patient, study, series, "0", "0", day.strftime("%Y%m%d"), name,
                                   rng.choice("MF"), day, dt.time(10, 30), accession, mods[k], k + 1, 5, now, now))
                for i in range(5):
                    rows_image.append(("default", patient, study, series, f"{series}.{i + 1}", "0", "0", i + 1, 512,
                                       512, 16, "1.2.840.10008.1.2.1", "1.2.840.10008.5.1.4.1.1.2", now, now))
            if s % max(1, studies // 50) == 0:
                picks.append({"PatientID": patient, "PatientName": name.split("^")[0][:4] + "*",
                              "StudyDate": f"{day:%Y%m%d}-{day + dt.timedelta(days=7):%Y%m%d}",
                              "AccessionNumber": accession, "ModalitiesInStudy": mods[0]})
        with cur.copy("COPY dicom_state_meta (tenant_id, patient_id, study_uid, series_uid, study_uid_hash,"
                      " series_uid_hash, study_date_origin, patient_name, patient_sex, study_date, study_time,"
                      " accession_number, modality, series_number, series_related_instances, created_time,"
                      " updated_time) FROM STDIN") as copy:
            for row in rows_state:
                copy.write_row(row)
        with cur.copy("COPY dicom_image_meta (tenant_id, patient_id, study_uid, series_uid, sop_uid,"
                      " study_uid_hash, series_uid_hash, instance_number, width, columns, bits_allocated,"
                      " transfer_syntax_uid, sop_class_uid, created_time, updated_time) FROM STDIN") as copy:
            for row in rows_image:
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE dicom_state_meta")
        conn.execute("ANALYZE dicom_image_meta")
    return picks


def study_queries(picks: list[dict[str, str]]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for p in picks:
        out += [{"PatientID": p["PatientID"]}, {"PatientName": p["PatientName"], "limit": "25"},
                {"StudyDate": p["StudyDate"]}, {"AccessionNumber": p["AccessionNumber"]},
                {"ModalitiesInStudy": p["ModalitiesInStudy"], "StudyDate": p["StudyDate"]}]
    return out


def timed(client: httpx.Client, url: str, params: dict[str, str] | None, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    r = client.get(url, params=params, headers=headers)
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
    return time.perf_counter() - started, len(r.content)


def latency(url: str, calls: list[tuple[str, dict[str, str] | None]], headers: dict[str, str]) -> list[float]:
    with httpx.Client(timeout=60) as client:
        for path, params in calls[:10]:
            timed(client, url + path, params, headers)
        return [timed(client, url + path, params, headers)[0] for path, params in calls]


def throughput(url: str, calls: list[tuple[str, dict[str, str] | None]], headers: dict[str, str],
               clients: int = 4) -> tuple[float, float]:
    """(requests/s, MB/s) with ``clients`` concurrent keep-alive clients."""
    chunks = [calls[i::clients] for i in range(clients)]

    def run(chunk: list[tuple[str, dict[str, str] | None]]) -> int:
        total = 0
        with httpx.Client(timeout=120) as client:
            for path, params in chunk:
                total += timed(client, url + path, params, headers)[1]
        return total

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        sizes = list(pool.map(run, chunks))
    seconds = time.perf_counter() - started
    return len(calls) / seconds, sum(sizes) / seconds / 1e6


def curl_throughput(url: str, paths: list[str], headers: dict[str, str], clients: int = 4) -> tuple[float, float]:
    """(requests/s, MB/s) fetching ``paths`` with ``curl --parallel`` (``clients`` keep-alive transfers at once).

    A C client: the Python client spends about as much CPU per request as
    dicomflow's server does, so on a small shared machine it would measure
    itself. Every answer must be 200 and non-empty.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".curl", delete=False) as config:
        for key, value in headers.items():
            config.write(f'header = "{key}: {value.replace(chr(34), chr(92) + chr(34))}"\n')
        for path in paths:
            config.write(f'url = "{url}{path}"\noutput = "/dev/null"\n')
    try:
        started = time.perf_counter()
        done = subprocess.run(["curl", "--silent", "--show-error", "--parallel", "--parallel-max", str(clients),
                               "--parallel-immediate", "--config", config.name,
                               "--write-out", "%{http_code} %{size_download}\n"],
                              capture_output=True, text=True, check=True, timeout=600)
        seconds = time.perf_counter() - started
    finally:
        os.unlink(config.name)
    answers = [line.split() for line in done.stdout.splitlines() if line.strip()]
    bad = [a for a in answers if a[0] != "200" or int(a[1]) == 0]
    if len(answers) != len(paths) or bad:
        raise RuntimeError(f"{url}: {len(answers)} answers to {len(paths)} requests, {len(bad)} not 200: {bad[:3]}")
    return len(paths) / seconds, sum(int(a[1]) for a in answers) / seconds / 1e6


def start_web(settings: Settings, workers: int, work: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    """``dicomflow web`` in a child process on a free port, once /healthz answers; (process, base URL)."""
    port = free_port()
    log = (work / f"{name}.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "dicomflow.cli", "web", "--port", str(port), "--workers",
                               str(workers)], env=to_child_env(settings, os.environ), stdout=log, stderr=log, cwd=work)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"dicomflow web ({name}) did not start: {(work / f'{name}.log').read_text()[-2000:]}")
        time.sleep(0.2)


def stop(server: subprocess.Popen[bytes] | None) -> None:
    if server is not None and server.poll() is None:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def analyze(settings: Settings) -> None:
    """Planner statistics for the freshly loaded index, as autovacuum gives a live one within a minute.

    Without them PostgreSQL estimates one row per series and takes the series index for each
    instance's newest receipt: a 500-instance series' lookup cost 64 ms instead of 4 ms.
    """
    with psycopg.connect(settings.database.conninfo(), autocommit=True) as conn:
        # The tables by name: a bare ANALYZE also visits other sessions' temporary tables and fails
        # ("relation with OID ... does not exist") when one is dropped meanwhile.
        conn.execute("ANALYZE dicom_object_meta, dicom_state_meta, dicom_image_meta")


MS = 1000.0


@dataclasses.dataclass
class Figures:
    """The rows measured (name, dicomflow, Orthanc) and the targets checked (name, met, figure)."""

    rows: list[tuple[str, float, float]] = dataclasses.field(default_factory=list)
    targets: list[tuple[str, bool, str]] = dataclasses.field(default_factory=list)

    def add(self, name: str, ours: float, theirs: float) -> None:
        self.rows.append((name, ours, theirs))

    def value(self, suffix: str) -> float | None:
        return next((o for name, o, _ in self.rows if name.endswith(suffix)), None)

    def report(self) -> int:
        """Print the rows with their ratios, then the targets; 0 when every target is met."""
        print(f"{'measure':56} {'dicomflow':>12} {'Orthanc':>12} {'ratio':>8}")
        for name, a, b in self.rows:
            lower_better = "(ms)" in name
            ratio = (b / a if lower_better else a / b) if a and b else float("nan")
            print(f"{name:56} {a:12.2f} {b:12.2f} {ratio:7.2f}x")
        for name, a, b in self.rows:
            if "metadata" in name and "warm" in name:
                self.targets.append((f"{name.replace(' (ms)', '')} <= 200 ms (issue 19)", a <= 200.0, f"{a:.1f} ms"))
            if "metadata, s3: warm p99, gzip" in name:
                self.targets.append((f"{name.replace(' (ms)', '')} <= 50 ms (issue 18)", a <= 50.0, f"{a:.1f} ms"))
            if name.startswith("thumbnail p50"):
                self.targets.append((f"{name.replace(' (ms)', '')} <= Orthanc's", a <= b, f"{a:.2f} vs {b:.2f} ms"))
        print()
        for name, ok, value in self.targets:
            print(f"target {name}: {'met' if ok else 'MISSED'} ({value})")
        print("\n(ratio: how many times better dicomflow is; latency ratios are Orthanc / dicomflow)")
        return 0 if all(ok for _, ok, _ in self.targets) else 1


def qido_rows(figures: Figures, ours: str, theirs: str, auth: dict[str, str], picks: list[dict[str, str]],
              real_picks: list[dict[str, str]], n: int) -> None:
    """QIDO-RS study search latency (one client) and throughput (four), both servers."""
    q_ours = [("/studies", q) for q in study_queries(picks)]
    q_theirs = [("/studies", q) for q in study_queries(real_picks)]
    q_ours = (q_ours * (n // len(q_ours) + 1))[:n]
    q_theirs = (q_theirs * (n // len(q_theirs) + 1))[:n]
    lat_ours, lat_theirs = latency(ours, q_ours, auth), latency(theirs, q_theirs, {})
    tput_ours, tput_theirs = throughput(ours, q_ours, auth)[0], throughput(theirs, q_theirs, {})[0]
    figures.add("QIDO-RS study search p50 (ms)", percentile(lat_ours, 50) * MS, percentile(lat_theirs, 50) * MS)
    figures.add("QIDO-RS study search p99 (ms)", percentile(lat_ours, 99) * MS, percentile(lat_theirs, 99) * MS)
    figures.add("QIDO-RS searches/s (4 clients)", tput_ours, tput_theirs)
    p99 = percentile(lat_ours, 99) * MS
    figures.targets += [("QIDO-RS p99 <= 50 ms", p99 <= 50.0, f"{p99:.1f} ms"),
                        ("QIDO-RS throughput >= 2x Orthanc", tput_ours >= 2 * tput_theirs,
                         f"{tput_ours / tput_theirs:.2f}x")]


def wado_rows(figures: Figures, real: list[DicomStoreMeta], servers: list[tuple[str, str, int, dict[str, str]]]) -> None:
    """WADO-RS retrieval rounds, alternating between ``servers`` (who, URL, pid, auth headers): "ours", "theirs", "s3".

    Two clients. httpx with its default headers, like dicomweb-client (requests) and browsers,
    sends Accept-Encoding: gzip, deflate, and Orthanc then gzips every answer (dicomflow does not
    compress). curl sends no Accept-Encoding: both servers send the bytes as they are.
    """
    any_ts = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    inst = [(f"/studies/{e.study_uid}/series/{e.series_uid}/instances/{e.sop_uid}", None) for e in real]
    wado: dict[tuple[str, str], list[float]] = {}  # (client, server) -> [seconds, MB, server CPU seconds]
    for _ in range(WADO_ROUNDS):
        for client in ("httpx", "curl"):
            for who, url, pid, auth in servers:
                headers = {**auth, **any_ts}
                cpu0 = process_cpu_s(pid)
                if client == "httpx":
                    rate, mb_rate = throughput(url, inst, headers)
                else:
                    rate, mb_rate = curl_throughput(url, [p for p, _ in inst], headers)
                acc = wado.setdefault((client, who), [0.0, 0.0, 0.0])
                acc[0] += len(inst) / rate
                acc[1] += len(inst) / rate * mb_rate
                acc[2] += process_cpu_s(pid) - cpu0
    done = WADO_ROUNDS * len(inst)
    for client, label in (("httpx", "4 clients, gzip accepted"), ("curl", "curl, 4 at once, identity")):
        o, t = wado[(client, "ours")], wado[(client, "theirs")]
        figures.add(f"WADO-RS instances/s ({label})", done / o[0], done / t[0])
        figures.add(f"WADO-RS MB/s ({label})", o[1] / o[0], t[1] / t[0])
        figures.add(f"WADO-RS server CPU per instance, {client} (ms)", o[2] / done * 1000, t[2] / done * 1000)
    ratio = wado[("httpx", "theirs")][0] / wado[("httpx", "ours")][0]
    figures.targets.append(("WADO-RS retrieval >= 1.5x Orthanc (4 clients, gzip accepted)", ratio >= 1.5,
                            f"{ratio:.2f}x"))
    if ("httpx", "s3") in wado:
        o, c, t = wado[("httpx", "s3")], wado[("curl", "s3")], wado[("httpx", "theirs")]
        figures.add("s3: WADO-RS instances/s (4 clients, gzip)", done / o[0], done / t[0])
        figures.add("s3: WADO-RS instances/s (curl, identity)", done / c[0], done / wado[("curl", "theirs")][0])
        figures.add("s3: WADO-RS server CPU per instance, httpx (ms)", o[2] / done * 1000, t[2] / done * 1000)
        figures.targets.append(("s3: WADO-RS retrieval >= 1.5x Orthanc (4 clients, gzip accepted)",
                                t[0] / o[0] >= 1.5, f"{t[0] / o[0]:.2f}x"))


def s3_index(settings: Settings, admin: str, dbname: str, prefix: str) -> Settings:
    """A copy of the index (``dbname``) whose objects ``storage migrate`` put in the stack's S3Proxy; its settings."""
    source = settings.database.dbname
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(dbname), sql.Identifier(source), sql.Identifier(settings.database.user)))
    s3 = dataclasses.replace(settings.storage.s3, prefix=prefix)
    on_s3 = dataclasses.replace(settings, database=dataclasses.replace(settings.database, dbname=dbname),
                                storage=dataclasses.replace(settings.storage, s3=s3))
    summary = Migration(on_s3.storage, on_s3.database, MigrateOptions(to="s3", jobs=8)).run()
    if summary.failed:
        raise RuntimeError(f"storage migrate failed for {len(summary.failed)} objects: {summary.failed[:3]}")
    print(f"copied {summary.copied} objects to S3 ({summary.bytes_copied / 1e6:.1f} MB) for the s3 rows", flush=True)
    local = settings.storage.root / ".s3-web"  # the s3 server's local caches only
    local.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(on_s3, storage=dataclasses.replace(on_s3.storage, backend="s3", root=local))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-instances", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--web-workers", type=int, default=2, help="dicomflow web --workers")
    parser.add_argument("--series-instances", type=int, default=500, help="instances of the metadata series")
    parser.add_argument("--no-s3", action="store_true", help="leave the s3 rows out")
    parser.add_argument("--rows", default=",".join(ROWS),
                        help=f"comma-separated rows to measure, of {','.join(ROWS)} (default: all)")
    args = parser.parse_args()
    rows_wanted = set(args.rows.split(","))
    if rows_wanted - set(ROWS):
        parser.error(f"--rows: unknown {sorted(rows_wanted - set(ROWS))}; known: {', '.join(ROWS)}")

    base = LocalStack(load_settings(None, os.environ))
    base.up()
    work = Path(tempfile.mkdtemp(prefix="bench-web-"))
    suffix = uuid.uuid4().hex[:8]
    s0 = base.settings
    topics = dataclasses.replace(s0.topics, main=f"bw_{suffix}", log=f"bw_log_{suffix}", audit=f"bw_audit_{suffix}",
                                 dicom_state=f"bw_state_{suffix}", dicom_image=f"bw_image_{suffix}",
                                 dlq=f"bw_{suffix}.dlq", consumer_group_id=f"bw_{suffix}", partitions=2)
    dbname = f"bench_web_{suffix}"
    admin = base.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(s0.database.user)))
    root = work / "storage"
    settings = dataclasses.replace(s0, topics=topics, database=dataclasses.replace(s0.database, dbname=dbname),
                                   storage=dataclasses.replace(s0.storage, root=root))
    orthanc: Orthanc | None = None
    server: subprocess.Popen[bytes] | None = None
    s3_server: subprocess.Popen[bytes] | None = None
    procs: dict[str, subprocess.Popen[bytes]] = {}  # the servers now running (restarted by the rows)
    use_s3 = not args.no_s3 and bool(s0.storage.s3.endpoint)
    s3_db = f"{dbname}_s3"
    s3_prefix = f"bench-web-{suffix}/"
    try:
        create_topics(settings.kafka, topics)
        with PgStore(settings.database) as store:
            store.migrate()
        corpus = make_corpus(root, args.files, studies=max(1, args.files // 10), series_per_study=2)
        big = make_corpus(root, args.series_instances, studies=1, series_per_study=1)
        with Publisher(settings.kafka, topics) as publisher:
            publisher.send_store_events(corpus.events + big.events).raise_for_failures()
        ConsumerService(settings, until_idle_s=3.0).run()
        analyze(settings)  # before the copy, which keeps the statistics
        on_s3 = s3_index(settings, admin, s3_db, s3_prefix) if use_s3 else None
        print(f"indexed {len(corpus.events)} real instances through the consumer; bulk-loading "
              f"{args.index_instances:,} more index rows with COPY ...", flush=True)
        picks = bulk_index(settings, args.index_instances)
        analyze(settings)
        with psycopg.connect(settings.database.conninfo()) as conn:
            row = conn.execute("SELECT count(*) FROM dicom_image_meta").fetchone()
        total = int(row[0]) if row else 0

        orthanc = Orthanc(work)
        loaded = orthanc.load([Path(e.file_path) for e in corpus.events + big.events])
        print(f"Orthanc loaded {loaded} of the {len(corpus.events) + len(big.events)} real files (its index: those only)", flush=True)

        keys = make_keys(work)
        oauth2 = dataclasses.replace(settings.web.oauth2, jwks=str(keys.jwks_path), issuer=ISSUER, audience=AUDIENCE)
        served = dataclasses.replace(settings, web=dataclasses.replace(settings.web, oauth2=oauth2))
        server, ours = start_web(served, args.web_workers, work, "web")
        if on_s3 is not None:
            s3_served = dataclasses.replace(on_s3, web=dataclasses.replace(on_s3.web, oauth2=oauth2))
            s3_server, ours_s3 = start_web(s3_served, args.web_workers, work, "web-s3")
        auth = {"Authorization": f"Bearer {keys.token(expires_in=3600)}"}
        theirs = orthanc.dicomweb

        # Orthanc's queries use its own data (the real corpus): same shapes, values it holds.
        real = [e for e in corpus.events]
        real_picks = [{"PatientID": e.patient_id, "PatientName": "Compressed*", "StudyDate": "20000101-20301231",
                       "AccessionNumber": e.accession_number or "", "ModalitiesInStudy": "MR"} for e in real[::37]]
        figures = Figures()
        if "qido" in rows_wanted:
            qido_rows(figures, ours, theirs, auth, picks, real_picks, args.requests)
        if "wado" in rows_wanted:
            wado_rows(figures, real, [("ours", ours, server.pid, auth), ("theirs", theirs, orthanc.process.pid, {})]
                      + ([("s3", ours_s3, s3_server.pid, auth)] if s3_server is not None else []))
        if "metadata" in rows_wanted:
            series = sorted({(e.study_uid, e.series_uid) for e in real})
            meta = [(f"/studies/{st}/series/{se}/metadata", None) for st, se in series]
            latency(ours, meta, auth)  # first build fills the cache
            m_ours, m_theirs = latency(ours, meta * 2, auth), latency(theirs, meta * 2, {})
            figures.add("series metadata p50 (ms)", percentile(m_ours, 50) * MS, percentile(m_theirs, 50) * MS)
            figures.add("series metadata p99 (ms)", percentile(m_ours, 99) * MS, percentile(m_theirs, 99) * MS)
        procs["web"] = server
        if s3_server is not None:
            procs["web-s3"] = s3_server

        def restarter(name: str, served_settings: Settings) -> Callable[[bool], str]:
            def restart(clear: bool) -> str:
                stop(procs[name])
                if clear:
                    shutil.rmtree(served_settings.storage.root / ".dicomweb" / "metadata", ignore_errors=True)
                procs[name], url = start_web(served_settings, args.web_workers, work, name)
                return url
            return restart

        fs = Contender("filesystem", restarter("web", served), auth)
        contenders = [fs] + ([Contender("s3", restarter("web-s3", s3_served), auth)] if s3_server is not None else [])
        if "big-metadata" in rows_wanted:
            b = big.series[0]
            figures.rows += [(f"{args.series_instances}-inst. series metadata, {name}", o, t) for name, o, t in
                             big_metadata(contenders, theirs, f"/studies/{b.study_uid}/series/{b.series_uid}/metadata")]
        if "thumbnail" in rows_wanted:
            thumbs = [f"/studies/{e.study_uid}/series/{e.series_uid}/instances/{e.sop_uid}/thumbnail"
                      for e in real[: min(len(real), 200)]]
            # a literal comma: Orthanc does not decode %2C in viewport
            rendered = [p.replace("/thumbnail", "/rendered") + "?viewport=128,128" for p in thumbs]
            figures.rows += thumbnails(fs, thumbs, theirs, rendered)
        if "viewer" in rows_wanted:
            url = fs.restart(False)
            study = real[0].study_uid
            viewer = f"{url}/viewer/viewer?StudyInstanceUIDs={study}&token={keys.token(expires_in=3600, scope='dicomweb.read')}"
            figures.rows += viewer_first_image(viewer, work)
        server, s3_server = procs["web"], procs.get("web-s3")

        print(f"\nindex: dicomflow {total:,} instances ({total // 10:,} studies); Orthanc {loaded} instances")
        print(f"machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end\n")
        return figures.report()
    finally:
        stop(server)
        stop(s3_server)
        for proc in procs.values():
            stop(proc)
        if orthanc is not None:
            orthanc.stop()
        try:
            delete_topics(settings.kafka, topics.all())
        except Exception:  # noqa: BLE001 - cleanup is best effort
            pass
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in (dbname, s3_db):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if use_s3:
            clean_bucket(s0, s3_prefix)
        shutil.rmtree(work, ignore_errors=True)


def clean_bucket(settings: Settings, prefix: str) -> None:
    """Remove the run's objects from the bucket (best effort)."""
    from dicomflow.blobs.s3 import S3Store

    try:
        store = S3Store(dataclasses.replace(settings.storage.s3, prefix=prefix))
        for info in list(store.list()):
            store.delete(info.key)
    except Exception as exc:  # noqa: BLE001 - cleanup is best effort
        print(f"(could not empty s3 prefix {prefix}: {exc})", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
