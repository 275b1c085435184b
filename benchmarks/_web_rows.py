"""bench_web's rows of issue 19: the big series' metadata, thumbnails against Orthanc, the viewer's first image.

Every row is measured in ``runs`` (3) alternated runs (dicomflow's servers,
then Orthanc, then again), and the medians of the runs' figures compared.

* **Series metadata, one ``--series-instances`` series**: per run each of
  our servers is restarted twice: once with its on-disk metadata cache
  removed (*cold*: every header parsed, on s3 read from the bucket), once
  with it kept (*new process*: one file read, nothing in memory); then
  ``warm`` requests without compression (``Accept-Encoding: identity``) and
  ``warm`` with gzip accepted (httpx's default, as browsers send; the first,
  which makes the gzip, is not counted). Orthanc answers with gzip accepted
  (it compresses), ``theirs`` requests per run: it takes seconds each.
* **Thumbnails**: per run our server is restarted (nothing kept in memory),
  then every thumbnail requested once (*rendered*) and once more (*kept*);
  Orthanc's ``/rendered?viewport=128,128`` twice the same way (it keeps
  nothing rendered, but its storage cache holds the files after the first
  pass). Each pass starts with one search to open the connection.
* **The viewer**: a fresh headless Chromium (empty profile: nothing cached)
  opens OHIF at ``/viewer/viewer?StudyInstanceUIDs=…&token=…`` for one
  study; measured from the navigation command to (a) the first answer to a
  ``/frames/`` request the browser receives (its response headers; polled
  every 50 ms) and (b) the first viewport whose screenshot is not all
  background (more than 2% of its pixels lit; polled, each check a
  screenshot of about 0.1-0.3 s). Ours only: Orthanc here has no viewer.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.browser_support import Chromium

Row = tuple[str, float, float]
MS = 1000.0
IDENTITY = {"Accept-Encoding": "identity"}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def get(client: httpx.Client, url: str, headers: dict[str, str]) -> tuple[float, int]:
    """(seconds, bytes on the wire) of one GET that must answer 200."""
    started = time.perf_counter()
    with client.stream("GET", url, headers=headers) as r:
        wire = sum(len(chunk) for chunk in r.iter_raw())
    if r.status_code != 200:
        raise RuntimeError(f"{url}: {r.status_code}")
    return time.perf_counter() - started, wire


@dataclass
class Contender:
    """One of our servers: ``restart(clear_disk_cache)`` stops it, starts it again and gives its base URL."""

    name: str
    restart: Callable[[bool], str]
    auth: dict[str, str]
    figures: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.figures.setdefault(name, []).append(value)


def big_metadata(ours: list[Contender], theirs: str, path: str, *, runs: int = 3, warm: int = 20,
                 theirs_n: int = 3) -> list[Row]:
    """The rows of the big series' metadata (see the module's docstring), Orthanc beside each latency."""
    orthanc: dict[str, list[float]] = {}
    for _ in range(runs):
        for c in ours:
            with httpx.Client(timeout=120) as client:
                c.add("cold", get(client, c.restart(True) + path, {**c.auth, **IDENTITY})[0])
            url = c.restart(False) + path
            with httpx.Client(timeout=120) as client:
                c.add("new process", get(client, url, {**c.auth, **IDENTITY})[0])
                plain = [get(client, url, {**c.auth, **IDENTITY}) for _ in range(warm)]
                get(client, url, c.auth)  # makes the gzip
                zipped = [get(client, url, c.auth) for _ in range(warm)]
            for label, sample in (("identity", plain), ("gzip", zipped)):
                c.add(f"{label} p50", percentile([s for s, _ in sample], 50))
                c.add(f"{label} p99", percentile([s for s, _ in sample], 99))
                c.add(f"{label} MB", sample[0][1] / 1e6)
        with httpx.Client(timeout=120) as client:
            sample = [get(client, theirs + path, {}) for _ in range(theirs_n)]
        orthanc.setdefault("p50", []).append(percentile([s for s, _ in sample], 50))
        orthanc.setdefault("p99", []).append(percentile([s for s, _ in sample], 99))
        orthanc.setdefault("MB", []).append(sample[0][1] / 1e6)
    rows: list[Row] = []
    nan = float("nan")
    for c in ours:
        f = {k: statistics.median(v) for k, v in c.figures.items()}
        rows += [
            (f"{c.name}: cold, headers parsed (ms)", f["cold"] * MS, nan),
            (f"{c.name}: new process, disk cache (ms)", f["new process"] * MS, nan),
            (f"{c.name}: warm p50, identity (ms)", f["identity p50"] * MS, statistics.median(orthanc["p50"]) * MS),
            (f"{c.name}: warm p99, identity (ms)", f["identity p99"] * MS, statistics.median(orthanc["p99"]) * MS),
            (f"{c.name}: warm p50, gzip accepted (ms)", f["gzip p50"] * MS, statistics.median(orthanc["p50"]) * MS),
            (f"{c.name}: warm p99, gzip accepted (ms)", f["gzip p99"] * MS, statistics.median(orthanc["p99"]) * MS),
            (f"{c.name}: MB sent, identity / gzip", f["identity MB"], f["gzip MB"]),
        ]
    rows.append(("Orthanc: MB sent (gzip accepted)", nan, statistics.median(orthanc["MB"])))
    return rows


def thumbnails(ours: Contender, ours_paths: list[str], theirs: str, theirs_paths: list[str], *,
               runs: int = 3) -> list[Row]:
    """Thumbnail rows: our first (rendered) and second (kept) pass against Orthanc's first and second."""
    passes: dict[str, list[float]] = {}

    def one_pass(client: httpx.Client, base: str, paths: list[str], headers: dict[str, str], label: str) -> None:
        get(client, base + "/studies?limit=1", headers)
        sample = [get(client, base + p, {**headers, "Accept": "image/jpeg"})[0] for p in paths]
        passes.setdefault(f"{label} p50", []).append(percentile(sample, 50))
        passes.setdefault(f"{label} p99", []).append(percentile(sample, 99))

    for _ in range(runs):
        url = ours.restart(False)
        with httpx.Client(timeout=60) as client:
            one_pass(client, url, ours_paths, ours.auth, "ours rendered")
            one_pass(client, url, ours_paths, ours.auth, "ours kept")
        with httpx.Client(timeout=60) as client:
            one_pass(client, theirs, theirs_paths, {}, "theirs first")
            one_pass(client, theirs, theirs_paths, {}, "theirs again")
    m = {k: statistics.median(v) * MS for k, v in passes.items()}
    return [
        ("thumbnail p50, first request: rendered (ms)", m["ours rendered p50"], m["theirs first p50"]),
        ("thumbnail p99, first request: rendered (ms)", m["ours rendered p99"], m["theirs first p99"]),
        ("thumbnail p50, again: kept (ms)", m["ours kept p50"], m["theirs again p50"]),
        ("thumbnail p99, again: kept (ms)", m["ours kept p99"], m["theirs again p99"]),
    ]


def viewer_first_image(viewer: str, work: Path, *, runs: int = 3, timeout: float = 120.0) -> list[Row]:
    """Seconds from navigation to the first frame answer and to the first lit viewport, medians of ``runs``."""
    frames, lit = [], []
    for n in range(runs):
        with Chromium(work / f"bench-viewer-{n}") as browser:
            started = time.perf_counter()
            browser.goto(viewer)
            first_frame = None
            while time.perf_counter() - started < timeout:
                if first_frame is None and any("/frames/" in a.url and a.status == 200 for a in list(browser.responses)):
                    first_frame = time.perf_counter() - started
                if browser.rendered_viewport():
                    lit.append(time.perf_counter() - started)
                    break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"the viewer showed no image within {timeout:.0f} s ({viewer})")
            frames.append(first_frame if first_frame is not None else float("nan"))
            bad = browser.answers_at_least(400)
            if bad:
                raise RuntimeError(f"the viewer's requests answered >= 400: {bad[:3]}")
    nan = float("nan")
    return [("viewer: navigation to first frame answer (ms)", statistics.median(frames) * MS, nan),
            ("viewer: navigation to first lit viewport (ms)", statistics.median(lit) * MS, nan)]


__all__ = ["Contender", "big_metadata", "thumbnails", "viewer_first_image"]
