"""The data lifecycle (issue 20): delete a study end to end, purge its objects, read the change feed.

    python benchmarks/bench_lifecycle.py [--study-instances 1000] [--repeats 3] [--index-instances 100000]
                                         [--feed-entries 10000] [--web-workers 1]

Setup: a scratch database and topics, a scratch storage root (filesystem
backend). ``--repeats`` studies of ``--study-instances`` real DICOM files
(written by :func:`dicomflow.corpus.make_corpus`, four series each) are
published and indexed by the real consumer, so each instance has its index
rows, receipt, file and ``create`` change; the index is then grown with
``--index-instances`` synthetic rows by COPY (``bench_web.bulk_index``), so
the deletes and searches run in an index of realistic size. One
``dicomflow purge`` round set (the lifecycle worker) publishes the creates
first, so the measured purge does only what a delete leaves. ``dicomflow web``
runs in a child process with OAuth2 on (a signed token on every request).

Per repeat (one study each; medians of the repeats are reported):

* **(a) delete → gone from QIDO**: from sending ``DELETE /studies/{uid}``
  to the first ``GET /studies?StudyInstanceUID={uid}`` that lists nothing
  (polled right after the 204; the delete commits before it answers, so the
  first search normally is the one). Target <= 2 s.
* **(b) purge rate**: the lifecycle worker (what ``dicomflow purge`` runs,
  in a thread of this process, so the interpreter's start is not counted)
  from its start to the purge queue empty and every file of the study gone:
  it publishes the study's ``delete`` changes to ``dicom_change_queue``,
  deletes the files through the storage layer and republishes the deleted
  instances and series states, ``lifecycle.purge_batch`` instances per
  transaction. Objects/s = files removed / seconds. Target >= 1,000/s.

Then **(c) the change feed**: the tenant's log is grown by COPY to at least
``--feed-entries`` entries (the real creates and deletes first), and read
with ``GET /changefeed?offset=&limit=200&includemetadata=false`` from offset
0 to the end, one client, keep-alive; entries/s over the whole read,
``--repeats`` reads, median. Every entry must come exactly once, in sequence
order. Target >= 5,000 entries/s. For comparison (no target) a study of
``--study-instances`` that is kept (indexed after the deletes, so its
``current`` entries follow theirs) is read with ``includemetadata=true``:
once with its headers parsed for the first time, then ``--repeats`` times
from the metadata cache (median), each entry checked to carry its DICOM JSON.

Needs the local stack (``dicomflow stack up``). The database, topics and
files are removed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

from dicomflow.corpus import make_corpus
from dicomflow.kafka.admin import create_topics, delete_topics
from dicomflow.kafka.producer import Publisher
from dicomflow.lifecycle import LifecycleWorker
from dicomflow.pipeline.service import ConsumerService
from dicomflow.settings import Settings, load_settings
from dicomflow.stack import LocalStack
from dicomflow.store import PgStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench_web import analyze, bulk_index, start_web, stop

from tests.integration.web_support import AUDIENCE, ISSUER, make_keys

TENANT = "bench"
PAGE = 200


def scratch(base: Settings, root: Path, dbname: str, tag: str) -> Settings:
    """Settings with the run's own topics, group, database and storage root."""
    t = base.topics
    topics = dataclasses.replace(
        t, main=f"bl_{tag}", log=f"bl_log_{tag}", dicom_state=f"bl_state_{tag}", dicom_image=f"bl_image_{tag}",
        audit=f"bl_audit_{tag}", dlq=f"bl_{tag}.dlq", change=f"bl_change_{tag}", consumer_group_id=f"bl_{tag}",
        partitions=2)
    return dataclasses.replace(base, topics=topics, database=dataclasses.replace(base.database, dbname=dbname),
                               storage=dataclasses.replace(base.storage, root=root, default_tenant=TENANT),
                               worker_node_id="bench-lifecycle")


def ingest(settings: Settings, root: Path, studies: int, per_study: int) -> list[tuple[str, list[Path]]]:
    """``studies`` studies of ``per_study`` real files, indexed by the consumer: [(study UID, its files)]."""
    out: list[tuple[str, list[Path]]] = []
    events = []
    for _ in range(studies):
        corpus = make_corpus(root, per_study, studies=1, series_per_study=4, tenant_id=TENANT)
        out.append((corpus.events[0].study_uid, [Path(e.file_path) for e in corpus.events]))
        events += corpus.events
    with Publisher(settings.kafka, settings.topics) as publisher:
        for i in range(0, len(events), 5000):
            publisher.send_store_events(events[i : i + 5000], with_receipt=False).raise_for_failures()
    summary = ConsumerService(settings, until_idle_s=3.0).run()
    if summary.instances != len(events):
        raise SystemExit(f"the consumer indexed {summary.instances} of {len(events)} instances")
    return out


def listed(client: httpx.Client, url: str, study: str) -> int:
    r = client.get(url + "/studies", params={"StudyInstanceUID": study})
    if r.status_code == 204:
        return 0
    if r.status_code != 200:
        raise RuntimeError(f"QIDO: {r.status_code} {r.text[:200]}")
    return len(r.json())


def delete_to_gone(client: httpx.Client, url: str, study: str) -> tuple[float, float]:
    """(seconds to the 204, seconds to the first QIDO search that no longer lists the study)."""
    if listed(client, url, study) != 1:
        raise RuntimeError(f"study {study} is not listed before its delete")
    started = time.perf_counter()
    r = client.delete(f"{url}/studies/{study}")
    answered = time.perf_counter() - started
    if r.status_code != 204:
        raise RuntimeError(f"DELETE: {r.status_code} {r.text[:200]}")
    while listed(client, url, study):
        if time.perf_counter() - started > 30:
            raise RuntimeError(f"study {study} still listed 30 s after its delete")
    return answered, time.perf_counter() - started


def queued(settings: Settings) -> int:
    with psycopg.connect(settings.database.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM dicom_purge_queue").fetchone()
    return int(row[0]) if row else 0


def purge(settings: Settings, files: list[Path]) -> float:
    """Seconds from the lifecycle worker's start to the queue empty and every file gone."""
    stop_event = threading.Event()
    worker = LifecycleWorker(settings, stop=stop_event)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="purge")
    started = time.perf_counter()
    thread.start()
    try:
        with psycopg.connect(settings.database.conninfo(), autocommit=True) as conn:
            while True:
                row = conn.execute("SELECT count(*) FROM dicom_purge_queue").fetchone()
                if row == (0,) and not any(p.exists() for p in files):  # the files only once the queue is empty
                    break
                if errors or time.perf_counter() - started > 300:
                    raise RuntimeError(f"the purge did not finish: {errors or 'timeout'}")
                time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        stop_event.set()
        thread.join(60)


def settle(settings: Settings) -> int:
    """Run the lifecycle worker until idle (publishes what is pending); returns how many changes it published."""
    return LifecycleWorker(settings).run(until_idle_s=0.5).published


def grow_feed(settings: Settings, entries: int) -> int:
    """COPY synthetic ``create`` entries into the tenant's change log until it holds ``entries``; returns its size."""
    with psycopg.connect(settings.database.conninfo()) as conn:
        row = conn.execute("SELECT count(*) FROM dicom_change_log WHERE tenant_id = %s", (TENANT,)).fetchone()
        have = int(row[0]) if row else 0
        with conn.cursor().copy("COPY dicom_change_log (tenant_id, study_uid, series_uid, sop_uid, action, state)"
                                " FROM STDIN") as copy:
            for n in range(max(0, entries - have)):
                study = f"1.2.826.0.1.3680043.10.2.{n // 100}"
                series = f"{study}.{n // 10 % 10}"
                copy.write_row((TENANT, study, series, f"{series}.{n % 10}", "create", "current"))
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE dicom_change_log")
    return max(entries, have)


def read_feed(client: httpx.Client, url: str, total: int, metadata: bool, offset: int = 0) -> float:
    """Seconds to read ``total`` entries from ``offset`` in pages of 200; checks each comes once, in order.

    With ``metadata`` every entry must carry its instance's DICOM JSON.
    """
    sequences: list[int] = []
    flag = "true" if metadata else "false"
    started = time.perf_counter()
    while len(sequences) < total:
        r = client.get(url + "/changefeed", params={"offset": str(offset + len(sequences)),
                                                    "limit": str(min(PAGE, total - len(sequences))),
                                                    "includemetadata": flag})
        if r.status_code != 200:
            raise RuntimeError(f"changefeed: {r.status_code} {r.text[:200]}")
        page = r.json()
        if not page:
            break
        if metadata and not all(e["Metadata"] for e in page):
            raise RuntimeError("includemetadata=true: an entry of a current instance came without its metadata")
        sequences += [e["Sequence"] for e in page]
    seconds = time.perf_counter() - started
    if len(sequences) < total or sequences != sorted(set(sequences)):
        raise RuntimeError(f"the feed gave {len(sequences)} entries ({len(set(sequences))} distinct) of {total}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study-instances", type=int, default=1000, help="instances of each deleted study")
    parser.add_argument("--repeats", type=int, default=3, help="studies deleted (and feed reads), medians reported")
    parser.add_argument("--index-instances", type=int, default=100000, help="synthetic index rows around them")
    parser.add_argument("--feed-entries", type=int, default=10000, help="change-feed entries read")
    parser.add_argument("--web-workers", type=int, default=1, help="dicomflow web --workers")
    args = parser.parse_args()

    base = LocalStack(load_settings(None, os.environ))
    base.up()
    s0 = base.settings
    tag = uuid.uuid4().hex[:8]
    dbname = f"bench_lifecycle_{tag}"
    work = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
    root = work / "storage"
    settings = scratch(s0, root, dbname, tag)
    admin = base.postgres.admin_conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname),
                                                                  sql.Identifier(s0.database.user)))
    server = None
    try:
        create_topics(settings.kafka, settings.topics)
        with PgStore(settings.database) as store:
            store.migrate()
        t0 = time.perf_counter()
        studies = ingest(settings, root, args.repeats, args.study_instances)
        bulk_index(settings, args.index_instances)
        analyze(settings)
        creates = settle(settings)
        print(f"index: {args.repeats} studies x {args.study_instances} real instances through the consumer "
              f"({creates} creates published) + {args.index_instances:,} COPY rows, in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)

        keys = make_keys(work)
        oauth2 = dataclasses.replace(settings.web.oauth2, jwks=str(keys.jwks_path), issuer=ISSUER, audience=AUDIENCE)
        served = dataclasses.replace(settings, web=dataclasses.replace(settings.web, oauth2=oauth2))
        server, url = start_web(served, args.web_workers, work, "web")
        auth = {"Authorization": f"Bearer {keys.token(tenant=TENANT, expires_in=3600)}"}

        answered, gone, purged = [], [], []
        with httpx.Client(timeout=60, headers=auth) as client:
            listed(client, url, studies[0][0])  # the connection and the token cache, before the clock
            for study, files in studies:
                a, g = delete_to_gone(client, url, study)
                answered.append(a)
                gone.append(g)
                if not all(p.exists() for p in files):
                    raise RuntimeError("files were removed before the purge")
                purged.append(purge(settings, files))
                if queued(settings):
                    raise RuntimeError("the purge queue is not empty")
                print(f"  study of {len(files)}: DELETE 204 after {a * 1000:.0f} ms, gone from QIDO after "
                      f"{g * 1000:.0f} ms; purged in {purged[-1]:.2f} s = {len(files) / purged[-1]:,.0f} objects/s",
                      flush=True)
            n = args.study_instances
            gone_s = statistics.median(gone)
            rate = n / statistics.median(purged)
            print(f"(a) DELETE /studies/{{uid}} of {n} instances -> gone from QIDO: median {gone_s * 1000:.0f} ms "
                  f"(the 204: {statistics.median(answered) * 1000:.0f} ms) over {args.repeats}; target <= 2 s: "
                  f"{'met' if gone_s <= 2.0 else 'NOT met'} ({2.0 / gone_s:.1f}x)")
            print(f"(b) purge (publish deletes + files + DELETED events): median {rate:,.0f} objects/s over "
                  f"{args.repeats}; target >= 1,000/s: {'met' if rate >= 1000 else 'NOT met'} ({rate / 1000:.1f}x)")

            ingest(settings, root, 1, n)  # a study that stays: current entries, for includemetadata=true
            kept_at = 2 * args.repeats * n
            total = grow_feed(settings, args.feed_entries)
            read_feed(client, url, PAGE, False)  # warm
            reads = [read_feed(client, url, total, False) for _ in range(args.repeats)]
            feed_rate = total / statistics.median(reads)
            cold = n / read_feed(client, url, n, True, kept_at)
            warm = n / statistics.median([read_feed(client, url, n, True, kept_at) for _ in range(args.repeats)])
            print(f"(c) GET /changefeed limit={PAGE} includemetadata=false over {total:,} entries: median "
                  f"{feed_rate:,.0f} entries/s over {args.repeats} reads; target >= 5,000/s: "
                  f"{'met' if feed_rate >= 5000 else 'NOT met'} ({feed_rate / 5000:.1f}x)")
            print(f"    includemetadata=true over the {n} creates of a kept study (no target): first read "
                  f"(headers parsed) {cold:,.0f} entries/s, again (metadata cached) median {warm:,.0f} entries/s")
        return 0 if gone_s <= 2.0 and rate >= 1000 and feed_rate >= 5000 else 1
    finally:
        stop(server)
        try:
            delete_topics(settings.kafka, settings.topics.all())
        except Exception as exc:  # noqa: BLE001 - cleanup only
            print(f"could not delete topics: {exc}", file=sys.stderr)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
