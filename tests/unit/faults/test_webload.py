"""The web phase's load and its verdicts: answers recorded as a real HTTP server gave them, outages judged from them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dicomflow.corpus import SeriesInfo
from dicomflow_faults.webload import Answer, Outage, Target, WebLoad, load_figures, targets
from dicomflow_faults.webrun import WebFaultResult, web_checks


class _Handler(BaseHTTPRequestHandler):
    """200 on /ok, 503 with Retry-After on /busy, 503 without on /bare, 500 on /broken; closes on /drop."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/drop":
            self.close_connection = True
            self.connection.close()
            return
        status = {"/ok": 200, "/busy": 503, "/bare": 503, "/broken": 500}[self.path]
        self.send_response(status)
        if self.path == "/busy":
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_load_records_each_status_retry_after_and_unanswered_requests(server: int) -> None:
    mix = [Target(p.strip("/"), p, "application/dicom+json") for p in ("/ok", "/busy", "/bare", "/broken", "/drop")]
    load = WebLoad(server, mix, clients=3, seed=5)
    t0 = time.monotonic()
    load.start()
    time.sleep(1.0)
    load.stop()
    answers = load.snapshot()
    kinds = {a.kind: a for a in answers}
    assert set(kinds) == {"ok", "busy", "bare", "broken", "drop"}
    assert all(a.status == 200 for a in answers if a.kind == "ok")
    assert all(a.status == 503 and a.retry_after for a in answers if a.kind == "busy")
    assert all(a.status == 503 and not a.retry_after for a in answers if a.kind == "bare")
    assert all(a.status is None and a.error for a in answers if a.kind == "drop")
    assert load.ok_since(t0) is not None and load.ok_since(time.monotonic() + 1) is None

    figures = load_figures(answers, [], t0)
    assert figures.total == len(answers)
    assert figures.bad_5xx == sum(a.kind == "broken" for a in answers) > 0
    assert figures.no_retry_after == sum(a.kind == "bare" for a in answers) > 0
    assert figures.unanswered == sum(a.kind == "drop" for a in answers) > 0
    assert figures.by_class["2xx"] == sum(a.kind == "ok" for a in answers)
    assert figures.empty_ok == figures.by_class["2xx"]  # the test server's "{}" is no content


def test_outage_figures_count_requests_made_while_down_and_the_time_to_the_first_200() -> None:
    def a(start: float, end: float, status: int | None) -> Answer:
        return Answer("x", start, end, status, status == 503, size=100)

    answers = [a(0.0, 0.1, 200), a(1.0, 1.2, 200),
               a(2.1, 3.1, 503), a(2.5, 2.6, 503), a(4.9, 5.0, 503),  # down from 2.0 to 5.0
               a(5.2, 5.3, 503), a(5.5, 5.9, 200), a(6.0, 6.1, 200),
               a(8.0, 12.0, 503)]  # the second outage (killed at 7.5) never recovers
    outages = [Outage(2.0, 5.0, 5.9), Outage(7.5, 9.0, None)]
    f = load_figures(answers, outages, t0=0.0)
    assert (f.before_first_kill, f.ok_before_first_kill) == (2, 2)
    first, second = f.outages
    assert (first.at_s, first.down_s, first.requests, first.answered_503) == (2.0, 3.0, 3, 3)
    assert first.slowest_s == pytest.approx(1.0) and first.recovery_s == pytest.approx(0.9)
    assert second.requests == 1 and second.slowest_s == pytest.approx(4.0) and second.recovery_s is None
    assert f.slowest_down_s == pytest.approx(4.0)
    assert f.longest_recovery_s is None  # one outage never recovered: no "longest" to claim
    assert load_figures(answers, outages[:1], 0.0).longest_recovery_s == pytest.approx(0.9)


def test_the_request_mix_covers_qido_and_wado_for_every_series() -> None:
    series = [SeriesInfo("default", "P1", "1.2.3", "1.2.3.1", 3), SeriesInfo("default", "P1", "1.2.3", "1.2.3.2", 1)]
    mix = targets(series, {"1.2.3.1": ["1.2.3.1.1", "1.2.3.1.2", "1.2.3.1.3"], "1.2.3.2": ["1.2.3.2.1"]})
    kinds = {t.kind for t in mix}
    assert kinds == {"qido studies", "qido series", "qido instances", "wado series metadata",
                     "wado instance metadata", "wado instance"}
    paths = {t.path for t in mix}
    assert "/studies/1.2.3/series/1.2.3.1/instances/1.2.3.1.2/metadata" in paths
    assert "/instances?SeriesInstanceUID=1.2.3.2&limit=20" in paths
    assert all('type="application/dicom"' in t.accept for t in mix if t.kind == "wado instance")


def _run(answers: list[Answer], outages: list[Outage], tracebacks: int = 0) -> dict[str, bool]:
    result = WebFaultResult(seconds=10.0, kills=len(outages), tracebacks=tracebacks,
                            figures=load_figures(answers, outages, 0.0))
    return {c.name: c.ok for c in web_checks(result)}


def test_the_verdicts_pass_a_tier_that_answers_503_fast_and_recovers() -> None:
    answers = [Answer("x", 0.0, 0.1, 200, False, size=500), Answer("x", 2.2, 3.1, 503, True),
               Answer("x", 4.0, 4.1, 503, True), Answer("x", 5.1, 5.2, 200, False, size=500)]
    verdicts = _run(answers, [Outage(2.0, 5.0, 5.2)])
    assert all(verdicts.values()), verdicts


def test_the_verdicts_fail_what_main_did_hang_500_traceback_slow_recovery() -> None:
    answers = [Answer("x", 0.0, 0.1, 200, False, size=500), Answer("x", 2.2, 12.2, 500, False),
               Answer("x", 2.5, 2.5, None, False, "ConnectionResetError: reset"),
               Answer("x", 3.0, 4.0, 503, False), Answer("x", 4.5, 4.6, 200, False, size=2),  # "[]" while down
               Answer("x", 12.5, 12.6, 200, False, size=500)]
    verdicts = _run(answers, [Outage(2.0, 5.0, 12.6)], tracebacks=2)
    failed = {name for name, ok in verdicts.items() if not ok}
    assert failed == {
        "web: no 5xx other than 503", "web: every 503 carries Retry-After",
        "web: every 2xx is a 200 with content (no empty result in place of an outage)",
        "web: every request answered (no reset, refusal or client timeout)",
        "web: answers while PostgreSQL was down within 3 s",
        "web: 200 again within 5 s of PostgreSQL ready, every outage", "web: no traceback in the server's log",
    }
    # no request made while PostgreSQL was down proves nothing: that fails too
    assert not _run([Answer("x", 0.0, 0.1, 200, False, size=9)], [Outage(2.0, 5.0, 5.2)])[
        "web: answers while PostgreSQL was down within 3 s"]
