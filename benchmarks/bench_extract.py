"""DICOM header extraction: files/s on one core, dicomflow versus plain pydicom.

    python benchmarks/bench_extract.py [--files 3000] [--rounds 3] [--source ctmr|all]
                                       [--corpus /tmp/dicomflow-bench-extract] [--profile]

The corpus is made from pydicom's sample files (the CT and MR ones by default,
``--source all`` for every sample that extracts): each output file is a copy
of a sample with fresh Study / Series / SOP Instance UIDs (a study every 200
files, a series every 50), pixel data included, written under ``--corpus``
(reused when it already holds the same corpus). The page cache is warmed
before timing, so both sides read from memory.

Two runs over the same files, alternated ``--rounds`` times in one process
(one core, one thread), best round reported:

* **dicomflow**: ``extract_file(path, tenant)``, the two wire-format
  records, everything the consumer needs;
* **pydicom** (baseline): ``pydicom.dcmread(path, stop_before_pixels=True, force=True)``
  then reading the same attributes through pydicom's API (which decodes
  them), without building any record.

Target: >= 2,500 files/s (0.4 ms a file) and faster than the baseline.
``--profile`` prints where dicomflow's time goes (cProfile, top functions).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import logging
import os
import pstats
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from dicomflow.dicom import walker
from dicomflow.dicom.constants import KEYWORDS
from dicomflow.dicom.exceptions import Unsupported
from dicomflow.errors import ExtractError
from dicomflow.extract import extract_file

SAMPLES = Path(pydicom.__file__).parent / "data" / "test_files"
TARGET_FILES_PER_S = 2500
RECEIVED = dt.datetime(2024, 1, 1)


def source_files(kind: str) -> list[Path]:
    """Sample files that extract, restricted to CT and MR headers unless ``kind`` is ``all``.

    The CT/MR choice leaves out TINY_ALPHA: sixty near-empty synthetic MR
    headers that would outnumber the real ones.
    """
    chosen = []
    for path in sorted(p for p in SAMPLES.rglob("*") if p.is_file()):
        if kind != "all" and "TINY_ALPHA" in path.parts:
            continue
        try:
            state, _ = extract_file(path, "bench", received=RECEIVED)
        except ExtractError:
            continue
        if kind == "all" or state.modality in ("CT", "MR"):
            chosen.append(path)
    return chosen


def build_corpus(folder: Path, count: int, kind: str) -> list[Path]:
    """``count`` files with fresh UIDs under ``folder``; reused if an identical corpus is there."""
    manifest = folder / "manifest.json"
    wanted = {"files": count, "source": kind, "pydicom": pydicom.__version__}
    if manifest.exists() and json.loads(manifest.read_text()) == wanted:
        return sorted(p for p in folder.rglob("*.dcm"))
    shutil.rmtree(folder, ignore_errors=True)
    sources = source_files(kind)
    datasets = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in sources:
            ds = pydicom.dcmread(path, force=True)
            try:  # a few samples are too broken for pydicom to write back (badVR.dcm)
                ds.save_as(io.BytesIO())
            except Exception:  # noqa: BLE001 - whatever pydicom raises, the sample is left out
                continue
            datasets.append(ds)
    paths = []
    study = series = ""
    for n in range(count):
        if n % 200 == 0:
            study = generate_uid()
        if n % 50 == 0:
            series = generate_uid()
        ds = datasets[n % len(datasets)]
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        if getattr(ds, "file_meta", None) is not None and "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{n // 500:03d}" / f"{n:06d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(path)
        paths.append(path)
    manifest.write_text(json.dumps(wanted))
    return paths


def run_dicomflow(paths: list[str]) -> None:
    for path in paths:
        extract_file(path, "bench", received=RECEIVED)


def run_pydicom(paths: list[str]) -> None:
    keywords = list(KEYWORDS.values())
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)  # force: raw datasets in --source all
        for keyword in keywords:
            value = ds.get(keyword)
            if keyword == "PatientName" and value is not None:
                str(value)


def timed(run: Callable[[list[str]], None], paths: list[str]) -> float:
    """Files per second of one pass."""
    start = time.perf_counter()
    run(paths)
    return len(paths) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000, help="corpus size (default 3000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated timing rounds (default 3)")
    parser.add_argument("--source", choices=("ctmr", "all"), default="ctmr")
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/dicomflow-bench-extract"))
    parser.add_argument("--profile", action="store_true", help="print dicomflow's cProfile top functions")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # odd samples log warnings; not what is measured
    logging.getLogger("pydicom").setLevel(logging.ERROR)

    t0 = time.perf_counter()
    corpus = build_corpus(args.corpus / f"{args.source}-{args.files}", args.files, args.source)
    paths = [str(p) for p in corpus]
    build_s = time.perf_counter() - t0
    sizes = [os.path.getsize(p) for p in paths]
    fast_share = sum(_fast_applies(p) for p in paths) / len(paths)
    for path in paths:  # warm the page cache for both sides
        with open(path, "rb") as f:
            f.read()

    ours: list[float] = []
    base: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(args.rounds):
            ours.append(timed(run_dicomflow, paths))
            base.append(timed(run_pydicom, paths))

    best_ours, best_base = max(ours), max(base)
    ratio = best_ours / best_base
    print(f"corpus: {len(paths)} files from {len(source_files(args.source))} "
          f"{'CT/MR ' if args.source == 'ctmr' else ''}samples, mean {statistics.mean(sizes) / 1024:.1f} KiB, "
          f"fast reader on {fast_share:.0%} (built/reused in {build_s:.1f}s under {args.corpus})")
    print(f"rounds: {args.rounds}, one process, one thread; best round shown (median in brackets)")
    print(f"dicomflow extract_file      : {best_ours:8.0f} files/s  {1e6 / best_ours:6.0f} us/file  "
          f"[{statistics.median(ours):.0f}]")
    print(f"pydicom dcmread + attributes: {best_base:8.0f} files/s  {1e6 / best_base:6.0f} us/file  "
          f"[{statistics.median(base):.0f}]")
    print(f"ratio dicomflow / pydicom   : {ratio:8.2f}x")
    met = best_ours >= TARGET_FILES_PER_S and ratio > 1
    print(f"target >= {TARGET_FILES_PER_S} files/s and faster than pydicom: {'met' if met else 'NOT met'}")

    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run_dicomflow, paths)
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return 0 if met else 1


def _fast_applies(path: str) -> bool:
    try:
        walker.read_file(path)
    except Unsupported:
        return False
    except Exception:  # noqa: BLE001 - any other failure is the walker's to report: keep the sample
        return True
    return True


if __name__ == "__main__":
    sys.exit(main())
