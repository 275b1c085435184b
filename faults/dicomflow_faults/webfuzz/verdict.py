"""What the web fuzz phase measured, and its checks."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomflow_faults.checks import Check

#: Lines of the web server's log that mean an unexpected exception.
MARKERS = ("Traceback", "Exception in ASGI application")


@dataclass
class WebFuzzResult:
    """Figures of the web fuzz phase (``--web-fuzz N``)."""

    requested: int
    sent: int = 0
    routes: int = 0
    families: Counter[str] = field(default_factory=Counter)
    #: "200", "404", ... or the outcome of an exchange that got no answer ("dropped", "timeout", ...).
    answers: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    server_error_samples: list[str] = field(default_factory=list)
    dropped: int = 0
    dropped_samples: list[str] = field(default_factory=list)
    timeouts: int = 0
    tracebacks: int = 0
    traceback_lines: list[str] = field(default_factory=list)
    stow_success: set[str] = field(default_factory=set)
    stow_refused: set[str] = field(default_factory=set)
    success_not_indexed: set[str] = field(default_factory=set)
    refused_indexed: set[str] = field(default_factory=set)
    #: Instances answered Success, indexed, then deleted by a DELETE of the run.
    deleted: set[str] = field(default_factory=set)
    #: DELETE requests answered 204.
    deletes_answered: int = 0
    drained: bool = False
    web_crashed: bool = False
    seconds: float = 0.0
    fuzz_seconds: float = 0.0
    lost: int = 0

    def record(self, family: str, label: str, status: int | None, outcome: str) -> None:
        self.sent += 1
        self.families[family] += 1
        self.answers[str(status) if status is not None else outcome] += 1
        if status is not None and status >= 500:
            self.server_errors += 1
            if len(self.server_error_samples) < 5:
                self.server_error_samples.append(f"{status} {label}")
        if outcome in ("dropped", "garbage") or outcome.startswith("connect-failed"):
            self.dropped += 1
            if len(self.dropped_samples) < 5:
                self.dropped_samples.append(f"{outcome} {label}")
        if outcome == "timeout":
            self.timeouts += 1

    @property
    def checks(self) -> list[Check]:
        return [
            Check("web fuzz: every request sent", self.sent >= self.requested,
                  f"{self.sent} of {self.requested} over {self.routes} routes in {self.fuzz_seconds:.1f} s"),
            Check("web fuzz: no 5xx answer", self.server_errors == 0,
                  f"{self.server_errors} answer(s) 5xx" + (f": {self.server_error_samples}" if self.server_errors else "")),
            Check("web fuzz: no dropped connection", self.dropped == 0 and self.timeouts == 0,
                  f"{self.dropped} dropped, {self.timeouts} timed out"
                  + (f": {self.dropped_samples}" if self.dropped else "")),
            Check("web fuzz: no traceback in the web log", self.tracebacks == 0,
                  f"{self.tracebacks} line(s)" + (f": {self.traceback_lines[0]}" if self.traceback_lines else "")),
            Check("web fuzz: the server never crashed", not self.web_crashed,
                  "exited during the run" if self.web_crashed else "up to the end"),
            Check("web fuzz: every STOW part answered Success is indexed", self.drained and not self.success_not_indexed,
                  f"{len(self.stow_success) - len(self.success_not_indexed)}/{len(self.stow_success)} indexed"
                  f" ({len(self.deleted)} of them deleted since by {self.deletes_answered} DELETE(s) answered 204)"
                  + ("" if self.drained else " (the consumer did not drain)")),
            Check("web fuzz: no refused STOW part is indexed", not self.refused_indexed,
                  f"{len(self.refused_indexed)} of {len(self.stow_refused)} refused instance(s) indexed"),
        ]


def stow_outcome(status: int | None, body: bytes, sent: list[str]) -> tuple[set[str], set[str]]:
    """(SOP UIDs answered Success, SOP UIDs refused) of one STOW-RS exchange carrying ``sent``.

    Success is what the answer's ReferencedSOPSequence (0008,1199) lists; every
    other UID of the body was refused, whether the answer listed it in
    FailedSOPSequence, could not name it, or refused the whole request.
    No answer at all (a dropped connection, already a failed check) counts
    as refused: an instance must not be indexed without its Success.
    """
    success: set[str] = set()
    if status in (200, 202):
        try:
            doc = json.loads(body)
            for item in doc.get("00081199", {}).get("Value", []):
                success.update(item.get("00081155", {}).get("Value", []))
        except (ValueError, AttributeError):
            pass
    return success & set(sent), set(sent) - success


def log_problems(path: Path) -> list[str]:
    """The web log's lines that mean an unexpected exception."""
    text = path.read_text(errors="replace") if path.exists() else ""
    return [line for line in text.splitlines() if any(m in line for m in MARKERS)]


def print_web_fuzz(w: Callable[[str], object], r: WebFuzzResult) -> None:
    """The phase's section of the suite's report."""
    w(f"\nWeb fuzz: {r.sent} requests over {r.routes} routes in {r.fuzz_seconds:.1f} s "
      f"(phase {r.seconds:.1f} s, server and consumer start included)\n")
    w("  families: " + ", ".join(f"{k} {v}" for k, v in sorted(r.families.items())) + "\n")
    w("  answers: " + ", ".join(f"{k} {v}" for k, v in r.answers.most_common()) + "\n")
    w(f"  STOW-RS parts: {len(r.stow_success)} answered Success ({len(r.success_not_indexed)} not indexed), "
      f"{len(r.stow_refused)} refused ({len(r.refused_indexed)} indexed); "
      f"{len(r.deleted)} deleted again by {r.deletes_answered} DELETE(s) answered 204\n")


def headline(r: WebFuzzResult) -> str:
    return (f"{r.sent} mutated, {r.server_errors} answered 5xx, {r.dropped} dropped connection(s), "
            f"{r.tracebacks} traceback(s) (all must be 0)")


def as_json(r: WebFuzzResult) -> dict[str, Any]:
    return {
        "requests": r.sent, "requested": r.requested, "routes": r.routes, "families": dict(r.families),
        "answers": dict(r.answers), "server_errors": r.server_errors, "dropped": r.dropped, "timeouts": r.timeouts,
        "tracebacks": r.tracebacks, "stow_success": len(r.stow_success), "stow_refused": len(r.stow_refused),
        "success_not_indexed": len(r.success_not_indexed), "refused_indexed": len(r.refused_indexed),
        "deleted": len(r.deleted), "deletes_answered": r.deletes_answered,
        "drained": r.drained, "web_crashed": r.web_crashed, "seconds": round(r.seconds, 1),
        "fuzz_seconds": round(r.fuzz_seconds, 1),
    }


__all__ = ["MARKERS", "WebFuzzResult", "as_json", "headline", "log_problems", "print_web_fuzz", "stow_outcome"]
