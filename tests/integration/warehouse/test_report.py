"""``dicomflow report`` over a real DuckDB warehouse file, and its HTML page rendered by headless Chromium.

The warehouse is bulk-generated (:mod:`dicomflow.warehouse.sample_data`), so
every figure of the report is known in advance. The page is opened by Debian's
Chromium from a file URL with networking features off: the dumped DOM must
hold the three charts with drawn shapes, and the screenshot must not be blank.
The screenshot is kept under pytest's tmp dir and its path printed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomflow.settings import Settings
from dicomflow.warehouse.report import DuckDBSource, build_report
from dicomflow.warehouse.report_html import render_html
from dicomflow.warehouse.sample_data import build_sample_warehouse

CHROMIUM = "/usr/bin/chromium"
N = 20_000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    build_sample_warehouse(path, N, seconds_apart=60)
    s = Settings()
    return dataclasses.replace(s, warehouse=dataclasses.replace(s.warehouse, path=path, snapshot_interval_s=0))


def test_report_answers_every_question_with_the_known_figures(warehouse: Settings) -> None:
    source = DuckDBSource(warehouse)
    report = build_report(source)
    source.close()
    s = report.sections
    assert s["totals"] == [{"instances": N, "studies": N // 200, "bytes": s["totals"][0]["bytes"]}]
    assert sum(r["instances"] for r in s["per_day"]) == N and len(s["per_day"]) == 14  # 60 s apart: 13.9 days
    assert {r["tenant"]: r["instances"] for r in s["per_tenant"]} == {"tenant-0": 6800, "tenant-1": 6600, "tenant-2": 6600}
    assert {r["modality"]: r["instances"] for r in s["per_modality"]} == {m: 4000 for m in ("CT", "MR", "CR", "US", "DX")}
    assert {r["source_ae"]: r["instances"] for r in s["per_ae"]} == {f"AE{k}": 5000 for k in range(4)}
    assert sum(r["instances"] for r in s["per_day_modality"]) == N
    for r in s["latency_per_day"]:  # generated latency: 40 ms + up to 2 s
        assert 40 <= r["p50"] <= r["p95"] <= r["p99"] <= 2040
    assert sum(r["n"] for r in s["latency_per_day"]) == N
    assert {r["error_class"] for r in s["dead_letters"]} == {"file-missing", "wire-format", "unreadable-dicom", "uid-mismatch"}
    assert sum(r["n"] for r in s["dead_letters"]) == N // 1000
    assert len(s["largest_studies"]) == 10
    assert s["largest_studies"][0]["bytes"] >= s["largest_studies"][-1]["bytes"]


def test_report_command_json_and_html(warehouse: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomflow.cli import app

    monkeypatch.setenv("DICOMFLOW_WAREHOUSE_PATH", str(warehouse.warehouse.path))
    monkeypatch.setenv("DICOMFLOW_WAREHOUSE_SNAPSHOT_INTERVAL_S", "0")
    page = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--json", "--html", str(page)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["totals"][0]["instances"] == N and data["source"] == "duckdb"
    assert page.read_text().startswith("<!DOCTYPE html>")


def _png_is_blank(png: bytes) -> bool:
    """True when every pixel of an 8-bit RGB(A) PNG has the same colour."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, colour = 8, b"", 0, 0, 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        data = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, _depth, colour = struct.unpack(">IIBB", data[:10])
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw = zlib.decompress(idat)
    channels = 4 if colour == 6 else 3
    stride = width * channels + 1
    # Unfiltered comparison is enough here: a uniform image has uniform filtered rows too.
    rows = {raw[y * stride + 1:(y + 1) * stride] for y in range(height)}
    return len(rows) == 1 and len(set(next(iter(rows)))) <= channels


def test_html_report_renders_its_charts_in_headless_chromium(warehouse: Settings, tmp_path: Path) -> None:
    source = DuckDBSource(warehouse)
    report = build_report(source)
    source.close()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    assert not re.search(r"(src|href)=\"https?:", page.read_text()), "the page must not load anything"
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1000,1400"]
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True).stdout
    for chart, shape in (("chart-ingest", "<rect"), ("chart-latency", "<polyline"), ("chart-dead-letters", "<rect")):
        m = re.search(rf'<svg id="{chart}"[^>]*>(.*?)</svg>', dom, re.S)
        assert m, f"{chart} missing from the rendered DOM"
        assert m.group(1).count(shape) >= 3 and "no data" not in m.group(1), f"{chart} drew nothing"
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120, check=True)
    png = shot.read_bytes()
    assert len(png) > 10_000 and not _png_is_blank(png)
    print(f"report screenshot: {shot}")
