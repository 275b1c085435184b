"""The report as one self-contained HTML page: inline CSS and SVG charts drawn here, no script, no network.

Charts: instances received per day stacked by modality, ingest latency
percentiles per day (p50/p95/p99 lines), dead letters by error class (bars).
Every text that comes from the data is escaped.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from typing import Any

from dicomflow.warehouse.report import Report, Row

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 760, 310, 70, 60, 30, 130


def _num(v: Any) -> float:
    return float(v or 0)


def _axis(max_y: float, label: str) -> list[str]:
    out = [f'<line x1="{PAD_L}" y1="{H - PAD_B}" x2="{W - PAD_R}" y2="{H - PAD_B}" stroke="#333"/>',
           f'<line x1="{PAD_L}" y1="{PAD_T}" x2="{PAD_L}" y2="{H - PAD_B}" stroke="#333"/>',
           f'<text x="{PAD_L - 6}" y="{PAD_T - 8}" font-size="11" fill="#333" text-anchor="end">{escape(label)}</text>']
    for k in range(5):
        v = max_y * k / 4
        y = H - PAD_B - (H - PAD_B - PAD_T) * k / 4
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{v:,.0f}</text>')
        out.append(f'<line x1="{PAD_L}" y1="{y:.1f}" x2="{W - PAD_R}" y2="{y:.1f}" stroke="#ddd"/>')
    return out


def _svg(title: str, body: list[str], chart_id: str) -> str:
    return (f'<figure><figcaption>{escape(title)}</figcaption>'
            f'<svg id="{chart_id}" class="chart" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
            f'viewBox="0 0 {W} {H}" role="img" aria-label="{escape(title)}">' + "".join(body) + "</svg></figure>")


def _empty(title: str, chart_id: str) -> str:
    return _svg(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" fill="#777">no data</text>'], chart_id)


def _legend(names: list[str]) -> list[str]:
    out = []
    for k, n in enumerate(names):
        y = PAD_T + 16 * k
        out.append(f'<rect x="{W - PAD_R + 10}" y="{y}" width="10" height="10" fill="{PALETTE[k % len(PALETTE)]}"/>')
        out.append(f'<text x="{W - PAD_R + 24}" y="{y + 9}" font-size="11">{escape(n)}</text>')
    return out


def _x_labels(days: list[str]) -> list[str]:
    step = max(1, len(days) // 12)
    span = (W - PAD_L - PAD_R) / max(1, len(days))
    return [f'<text x="{PAD_L + span * (k + 0.5):.1f}" y="{H - PAD_B + 14}" font-size="10" text-anchor="end" '
            f'transform="rotate(-35 {PAD_L + span * (k + 0.5):.1f} {H - PAD_B + 14})">{escape(d)}</text>'
            for k, d in enumerate(days) if k % step == 0]


def ingest_chart(rows: list[Row]) -> str:
    title = "Instances received per day, by modality"
    if not rows:
        return _empty(title, "chart-ingest")
    days = sorted({str(r["day"]) for r in rows})
    mods = sorted({str(r["modality"]) for r in rows})
    cell: dict[tuple[str, str], float] = defaultdict(float)
    for r in rows:
        cell[(str(r["day"]), str(r["modality"]))] += _num(r["instances"])
    max_y = max(sum(cell[(d, m)] for m in mods) for d in days) or 1.0
    span = (W - PAD_L - PAD_R) / len(days)
    body = _axis(max_y, "instances")
    for k, d in enumerate(days):
        y = float(H - PAD_B)
        for j, m in enumerate(mods):
            v = cell[(d, m)]
            if not v:
                continue
            h = (H - PAD_B - PAD_T) * v / max_y
            y -= h
            body.append(f'<rect class="bar" x="{PAD_L + span * k + span * 0.1:.1f}" y="{y:.1f}" width="{span * 0.8:.1f}" '
                        f'height="{h:.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(d)} {escape(m)}: {v:,.0f}</title></rect>')
    return _svg(title, body + _x_labels(days) + _legend(mods), "chart-ingest")


def latency_chart(rows: list[Row]) -> str:
    title = "Ingest latency per day (ms): p50, p95, p99"
    if not rows:
        return _empty(title, "chart-latency")
    days = [str(r["day"]) for r in rows]
    series = ("p50", "p95", "p99")
    max_y = max(_num(r[s]) for r in rows for s in series) or 1.0
    span = (W - PAD_L - PAD_R) / len(days)
    body = _axis(max_y, "ms")
    for j, s in enumerate(series):
        pts = [(PAD_L + span * (k + 0.5), H - PAD_B - (H - PAD_B - PAD_T) * max(0.0, _num(r[s])) / max_y) for k, r in enumerate(rows)]
        colour = PALETTE[j]
        body.append(f'<polyline class="line" fill="none" stroke="{colour}" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"><title>{escape(days[k])} {s}: '
                 f'{_num(rows[k][s]):,.1f} ms</title></circle>' for k, (x, y) in enumerate(pts)]
    return _svg(title, body + _x_labels(days) + _legend(list(series)), "chart-latency")


def dead_letter_chart(rows: list[Row]) -> str:
    title = "Dead letters by error class"
    if not rows:
        return _empty(title, "chart-dead-letters")
    max_x = max(_num(r["n"]) for r in rows) or 1.0
    bar_h = min(28.0, (H - PAD_T - 20) / len(rows))
    body = []
    for k, r in enumerate(rows):
        y = PAD_T + k * bar_h
        w = (W - 260) * _num(r["n"]) / max_x
        body.append(f'<text x="170" y="{y + bar_h * 0.65:.1f}" font-size="11" text-anchor="end">{escape(str(r["error_class"]))}</text>')
        body.append(f'<rect class="bar" x="180" y="{y + 2:.1f}" width="{max(w, 1):.1f}" height="{bar_h - 4:.1f}" '
                    f'fill="{PALETTE[2]}"><title>{escape(str(r["error_class"]))}: {_num(r["n"]):,.0f}</title></rect>')
        body.append(f'<text x="{184 + w:.1f}" y="{y + bar_h * 0.65:.1f}" font-size="11">{_num(r["n"]):,.0f}</text>')
    return _svg(title, body, "chart-dead-letters")


def _table(title: str, rows: list[Row]) -> str:
    if not rows:
        return f"<h3>{escape(title)}</h3><p class='none'>none</p>"
    cols = list(rows[0])
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt(r[c]))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<h3>{escape(title)}</h3><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


_CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1000px}
h1{font-size:22px}figure{margin:16px 0}figcaption{font-weight:600;margin-bottom:4px}
table{border-collapse:collapse;margin-bottom:16px;font-size:13px}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.totals{font-size:15px}"""


def render_html(report: Report) -> str:
    """The whole page."""
    s = report.sections
    totals = (s.get("totals") or [{}])[0]
    summary = (f"<p class='totals'>{_fmt(totals.get('instances', 0))} instances, {_fmt(totals.get('studies', 0))} studies, "
               f"{_fmt(totals.get('bytes', 0))} bytes received; source {escape(report.source)}, "
               f"generated {escape(report.generated_at)}.</p>")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>dicomflow ingest report</title>",
        f"<style>{_CSS}</style></head><body><h1>dicomflow ingest report</h1>", summary,
        ingest_chart(s.get("per_day_modality", [])), latency_chart(s.get("latency_per_day", [])),
        dead_letter_chart(s.get("dead_letters", [])),
        _table("Per day", s.get("per_day", [])), _table("Per tenant", s.get("per_tenant", [])),
        _table("Per modality", s.get("per_modality", [])), _table("Per sending AE", s.get("per_ae", [])),
        _table("Ingest latency per day (ms)", s.get("latency_per_day", [])),
        _table("Dead letters by error class", s.get("dead_letters", [])),
        _table("Largest studies", s.get("largest_studies", [])),
        "</body></html>\n",
    ]
    return "".join(parts)


__all__ = ["dead_letter_chart", "ingest_chart", "latency_chart", "render_html"]
