"""C-FIND: dicomflow scp versus Orthanc's DICOM server, same machine, same run (issue 21).

Measures study-level C-FIND latency (p50 / p99, milliseconds from the
C-FIND-RQ to the final response, on one open association, the minimal SCU
of _find_scu.py for both servers: pynetdicom's SCU cost more than the servers) over dicomflow's index grown to ``--index-instances``
(100,000) rows with COPY (as bench_web.py grows it: studies of two series of
five instances, random names, dates over ten years). Orthanc gets
``--files`` real files (its REST API; loading 100,000 files into it would
take an hour), so its index is far smaller: the comparison favours Orthanc.

Query shapes (both servers, values each server holds): PatientID exact,
PatientName ``SURNAME^G*`` wildcard, a week of StudyDate, AccessionNumber,
ModalitiesInStudy with a StudyDate range; return keys StudyInstanceUID,
PatientName, PatientID, StudyDate, AccessionNumber, ModalitiesInStudy,
NumberOfStudyRelatedInstances.

Target: p99 <= 50 ms on the 100k-instance index.

Run: ``DICOMFLOW_STACK_DIR=.dicomflow python benchmarks/bench_qr.py`` (the
shared stack's PostgreSQL and Kafka; the receiver runs as its own process).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pydicom
from psycopg import sql
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as STUDY_ROOT

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.qr.results import encode_identifier
from dicomflow.qr.service import FindRequest, FindService
from dicomflow.settings import Settings, load_settings, to_child_env
from dicomflow.stack import LocalStack, free_port
from dicomflow.store import PgStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._find_scu import FindScu
from benchmarks.bench_web import analyze, bulk_index, percentile, stop
from tests.integration.web_support import ORTHANC, Orthanc

IMPLICIT = "1.2.840.10008.1.2"
RETURN_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances")


class OrthancDimse(Orthanc):
    """Orthanc with its DICOM server on (C-FIND from any AE, no result limit), loaded over REST."""

    def __init__(self, work: Path) -> None:
        self.dicom_port = free_port()
        self.http = free_port()
        self.folder = work / f"orthanc-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True)
        config = {
            "Name": "dicomflow-bench", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "DicomServerEnabled": True, "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port, "DicomCheckCalledAet": False, "DicomAlwaysAllowFind": True,
            "LimitFindResults": 0, "HttpPort": self.http, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "HttpServerEnabled": True, "StorageCompression": False,
        }
        (self.folder / "config.json").write_text(json.dumps(config))
        self.log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "config.json")], stdout=self.log,
                                        stderr=self.log, cwd=self.folder)
        deadline = time.monotonic() + 60
        while not self._alive():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"Orthanc did not start: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)


def start_scp(settings: Settings, work: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``dicomflow scp`` in a child process, once it answers C-ECHO; (process, port)."""
    port = free_port()
    log = (work / "scp.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "dicomflow.cli", "scp", "--port", str(port)],
                              env=to_child_env(settings, os.environ), stdout=log, stderr=log, cwd=work)
    deadline = time.monotonic() + 60
    ae = AE(ae_title="BENCH")
    ae.add_requested_context("1.2.840.10008.1.1")
    while True:
        assoc = ae.associate("127.0.0.1", port, ae_title="DICOMFLOW")
        if assoc.is_established:
            assoc.release()
            return server, port
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"dicomflow scp did not start: {(work / 'scp.log').read_text()[-2000:]}")
        time.sleep(0.3)


def identifier(keys: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key in RETURN_KEYS:
        setattr(ds, key, "")
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def name_pattern(name: str) -> str:
    """``SURNAME^G*``: a surname and the given name's initial (QIDO-RS's bench caps its name search at 25 instead)."""
    surname, _, given = name.partition("^")
    return f"{surname}^{given[:1]}*"


def with_names(settings: Settings, picks: list[dict[str, str]]) -> list[dict[str, str]]:
    """bench_web's picks, their PatientName a ``SURNAME^G*`` pattern of the picked patient's name."""
    with psycopg.connect(settings.database.conninfo()) as conn:
        for p in picks:
            row = conn.execute("SELECT patient_name FROM dicom_state_meta WHERE patient_id = %s LIMIT 1",
                               [p["PatientID"]]).fetchone()
            p["PatientName"] = name_pattern(str(row[0]) if row else "A")
    return picks


def study_shapes(picks: list[dict[str, str]]) -> list[dict[str, str]]:
    """The five query shapes for each picked study."""
    out: list[dict[str, str]] = []
    for p in picks:
        out += [{"PatientID": p["PatientID"]}, {"PatientName": p["PatientName"]},
                {"StudyDate": p["StudyDate"]}, {"AccessionNumber": p["AccessionNumber"]},
                {"ModalitiesInStudy": p["ModalitiesInStudy"], "StudyDate": p["StudyDate"]}]
    return out


def orthanc_picks(paths: list[Path]) -> list[dict[str, str]]:
    """Query values from the files Orthanc holds (same shapes as dicomflow's)."""
    picks = []
    for path in paths[:: max(1, len(paths) // 50)]:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        picks.append({"PatientID": str(ds.PatientID), "PatientName": name_pattern(str(ds.get("PatientName", "") or "A")),
                      "StudyDate": f"{ds.StudyDate}-{ds.StudyDate}", "AccessionNumber": str(ds.get("AccessionNumber", "")),
                      "ModalitiesInStudy": str(ds.get("Modality", "CT"))})
    return picks


def latencies(port: int, called: str, queries: list[dict[str, str]]) -> tuple[list[float], int]:
    """Seconds per C-FIND (one association, the minimal SCU of _find_scu.py), and the matches returned in all."""
    scu = FindScu(port, STUDY_ROOT, called)
    out, matches = [], 0
    try:
        for keys in queries:
            raw = encode_identifier(identifier(keys), IMPLICIT)
            started = time.perf_counter()
            found, status = scu.find(raw)
            out.append(time.perf_counter() - started)
            if status != 0:
                raise RuntimeError(f"{called}: status 0x{status:04X} for {keys}")
            matches += found
    finally:
        scu.close()
    return out, matches


def service_latencies(settings: Settings, queries: list[dict[str, str]]) -> list[float]:
    """Seconds per query of dicomflow's FindService in this process (SQL and answers encoded, no network, no SCU)."""
    finder = FindService(settings.qr, settings.database, ae_title="DICOMFLOW", node_id="bench", audit=lambda _: None)
    out = []
    try:
        for keys in queries:
            raw = encode_identifier(identifier(keys), IMPLICIT)
            request = FindRequest(STUDY_ROOT, raw, IMPLICIT, "default", "BENCH")
            started = time.perf_counter()
            for response in finder.find(request, lambda: False):
                if response.identifier is not None:
                    response.identifier.encode(IMPLICIT)
            out.append(time.perf_counter() - started)
    finally:
        finder.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-instances", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=400, help="real files loaded into Orthanc")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the query list per server")
    args = parser.parse_args()

    base = LocalStack(load_settings(None, os.environ))
    base.up()
    work = Path(tempfile.mkdtemp(prefix="bench-qr-"))
    suffix = uuid.uuid4().hex[:8]
    s0 = base.settings
    topics = dataclasses.replace(s0.topics, main=f"bq_{suffix}", log=f"bq_log_{suffix}", audit=f"bq_audit_{suffix}",
                                 dicom_state=f"bq_state_{suffix}", dicom_image=f"bq_image_{suffix}",
                                 dlq=f"bq_{suffix}.dlq", consumer_group_id=f"bq_{suffix}", partitions=1)
    dbname = f"bench_qr_{suffix}"
    admin = base.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(s0.database.user)))
    settings = dataclasses.replace(s0, topics=topics, database=dataclasses.replace(s0.database, dbname=dbname),
                                   storage=dataclasses.replace(s0.storage, root=work / "storage", default_tenant="default"),
                                   qr=dataclasses.replace(s0.qr, max_results=10_000))
    orthanc: OrthancDimse | None = None
    scp: subprocess.Popen[bytes] | None = None
    try:
        create_topics(settings.kafka, topics)
        with PgStore(settings.database) as store:
            store.migrate()
        print(f"bulk-loading {args.index_instances:,} index rows with COPY ...", flush=True)
        picks = bulk_index(settings, args.index_instances)
        analyze(settings)
        corpus = make_corpus(work / "files", args.files, studies=max(1, args.files // 10), series_per_study=2)
        orthanc = OrthancDimse(work)
        paths = [Path(e.file_path) for e in corpus.events]
        loaded = orthanc.load(paths)
        print(f"Orthanc loaded {loaded} of {len(paths)} real files (its index: those only)", flush=True)
        scp, port = start_scp(settings, work)

        ours_q = study_shapes(with_names(settings, picks))
        theirs_q = study_shapes(orthanc_picks(paths))
        random.Random(5).shuffle(ours_q)
        latencies(port, "DICOMFLOW", ours_q[:20])  # warm-up: connections, prepared statements, caches
        latencies(orthanc.dicom_port, "ORTHANC", theirs_q[:20])
        ours: list[float] = []
        theirs: list[float] = []
        ours_matches = theirs_matches = 0
        for _ in range(args.rounds):  # alternated, so both see the same machine load
            t, m = latencies(port, "DICOMFLOW", ours_q)
            ours += t
            ours_matches += m
            t, m = latencies(orthanc.dicom_port, "ORTHANC", theirs_q)
            theirs += t
            theirs_matches += m
        service_latencies(settings, ours_q[:20])
        inproc = service_latencies(settings, ours_q * args.rounds)
        ms = 1000.0
        print(f"\nindex: dicomflow {args.index_instances:,} instances ({args.index_instances // 10:,} studies); "
              f"Orthanc {loaded} instances")
        print(f"C-FIND study level, {len(ours)} queries each, one association, blocking SCU (_find_scu.py)")
        print(f"{'measure':34} {'dicomflow':>10} {'Orthanc':>10}")
        print(f"{'p50 (ms)':34} {percentile(ours, 50) * ms:10.1f} {percentile(theirs, 50) * ms:10.1f}")
        print(f"{'p99 (ms)':34} {percentile(ours, 99) * ms:10.1f} {percentile(theirs, 99) * ms:10.1f}")
        print(f"{'dicomflow FindService in-process p50':34} {percentile(inproc, 50) * ms:10.1f}")
        print(f"{'dicomflow FindService in-process p99':34} {percentile(inproc, 99) * ms:10.1f}")
        print(f"{'matches per query (mean)':34} {ours_matches / len(ours):10.1f} {theirs_matches / len(theirs):10.1f}")
        p99 = percentile(ours, 99) * ms
        print(f"load average during the run: {os.getloadavg()[0]:.1f} (the figures need an idle machine)")
        print(f"\ntarget: C-FIND study-level p99 <= 50 ms: {'met' if p99 <= 50 else 'NOT met'} ({p99:.1f} ms)")
        return 0 if p99 <= 50 else 1
    finally:
        stop(scp)
        if orthanc is not None:
            orthanc.stop()
        delete_topics(settings.kafka, topics.all())
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


if __name__ == "__main__":
    raise SystemExit(main())
