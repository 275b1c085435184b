"""The DICOMweb load of the web phase: a few client threads asking QIDO-RS and WADO-RS questions, every answer kept.

Each thread keeps one HTTP/1.1 connection (made again after any transport
error) and goes round a mix of the requests a viewer makes: the study list,
a study's series, a series' instances, instance and series metadata, and an
instance retrieve (``multipart/related; type="application/dicom"``). Every
request is recorded with when it started and ended, its status (None: no
answer at all) and whether a 503 carried ``Retry-After``; the phase judges the
records against the times PostgreSQL was down (:func:`outage_figures`).
"""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomflow.corpus import SeriesInfo

#: Seconds a client waits for an answer before counting the request unanswered.
CLIENT_TIMEOUT_S = 20.0

_DICOM_JSON = "application/dicom+json"
_MULTIPART_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


@dataclass(frozen=True, slots=True)
class Answer:
    """One request of the load: monotonic start and end, status (None: no answer), Retry-After present, body size."""

    kind: str
    started: float
    ended: float
    status: int | None
    retry_after: bool
    error: str = ""
    size: int = 0

    @property
    def seconds(self) -> float:
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class Target:
    """A request the load may make: what it is (for the figures), its path and its Accept header."""

    kind: str
    path: str
    accept: str


def targets(series: Sequence[SeriesInfo], sop_uids: dict[str, list[str]]) -> list[Target]:
    """The request mix over the indexed corpus: per series its QIDO and WADO questions.

    ``sop_uids`` maps a series UID to some of its instances' SOP UIDs.
    """
    out = [Target("qido studies", "/studies?limit=50&includefield=all", _DICOM_JSON)]
    for s in series:
        study, base = s.study_uid, f"/studies/{s.study_uid}/series/{s.series_uid}"
        out.append(Target("qido series", f"/studies/{study}/series", _DICOM_JSON))
        out.append(Target("qido instances", f"/instances?SeriesInstanceUID={s.series_uid}&limit=20", _DICOM_JSON))
        out.append(Target("wado series metadata", f"{base}/metadata", _DICOM_JSON))
        for sop in sop_uids.get(s.series_uid, [])[:2]:
            out.append(Target("wado instance metadata", f"{base}/instances/{sop}/metadata", _DICOM_JSON))
            out.append(Target("wado instance", f"{base}/instances/{sop}", _MULTIPART_DICOM))
    return out


@dataclass
class WebLoad:
    """``clients`` threads requesting ``targets`` from ``127.0.0.1:port`` until :meth:`stop`."""

    port: int
    targets: list[Target]
    clients: int = 4
    seed: int = 0
    answers: list[Answer] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(self.clients):
            thread = threading.Thread(target=self._client, args=(random.Random(self.seed + n),),
                                      name=f"faults-web-client-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(CLIENT_TIMEOUT_S + 5)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def ok_since(self, t: float) -> float | None:
        """End time of the first 200 answer that ended at or after ``t``, None if none yet."""
        with self._lock:
            ends = [a.ended for a in self.answers if a.status == 200 and a.ended >= t]
        return min(ends) if ends else None

    def _client(self, rng: random.Random) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            target = rng.choice(self.targets)
            current = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=CLIENT_TIMEOUT_S)
            conn = current
            started = time.monotonic()
            try:
                current.request("GET", target.path, headers={"Accept": target.accept})
                response = current.getresponse()
                body = response.read()
                answer = Answer(target.kind, started, time.monotonic(), response.status,
                                response.getheader("Retry-After") is not None, size=len(body))
                if response.getheader("Connection", "").lower() == "close":
                    current.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                answer = Answer(target.kind, started, time.monotonic(), None, False, f"{type(exc).__name__}: {exc}")
                current.close()
                conn = None
                time.sleep(0.1)  # a refused connection answers at once: do not spin
            with self._lock:
                self.answers.append(answer)
        if conn is not None:
            conn.close()


@dataclass(frozen=True)
class Outage:
    """One SIGKILL of PostgreSQL: when it was killed, when the restarted server was ready, first 200 after."""

    killed: float
    ready: float | None
    first_ok: float | None

    @property
    def recovery_s(self) -> float | None:
        """Seconds from PostgreSQL ready to the first 200 answer (None: no 200 before the phase moved on)."""
        if self.ready is None or self.first_ok is None:
            return None
        return max(self.first_ok - self.ready, 0.0)


@dataclass(frozen=True)
class OutageFigures:
    """One outage as the clients saw it (times in seconds since the load started)."""

    at_s: float
    down_s: float | None
    requests: int
    answered_503: int
    slowest_s: float | None
    recovery_s: float | None


@dataclass(frozen=True)
class LoadFigures:
    """What the answers say: counts by status, the bad ones, each outage."""

    total: int
    by_class: dict[str, int]
    by_status: dict[int, int]
    bad_5xx: int
    no_retry_after: int
    unanswered: int
    #: 2xx answers that are not a 200 with content: an empty result would hide the outage (every request has one).
    empty_ok: int
    before_first_kill: int
    ok_before_first_kill: int
    outages: list[OutageFigures]
    errors: list[str]

    @property
    def slowest_down_s(self) -> float | None:
        """The slowest answer to a request made while PostgreSQL was down (None: no such request)."""
        return max((o.slowest_s for o in self.outages if o.slowest_s is not None), default=None)

    @property
    def longest_recovery_s(self) -> float | None:
        """The longest time from PostgreSQL ready to the first 200 (None: some outage never recovered)."""
        times = [o.recovery_s for o in self.outages]
        return None if not times or any(t is None for t in times) else max(t for t in times if t is not None)


def status_class(status: int | None) -> str:
    return "no answer" if status is None else f"{status // 100}xx"


def load_figures(answers: Sequence[Answer], outages: Sequence[Outage], t0: float) -> LoadFigures:
    """Count the answers; "while down" is a request in flight at some moment between a kill and the server's ready.

    ``t0``: when the load started (the figures' times are relative to it).
    """
    by_status = Counter(a.status for a in answers if a.status is not None)
    first_kill = min((o.killed for o in outages), default=float("inf"))
    before = [a for a in answers if a.ended < first_kill]
    errors = Counter(a.error.split(":")[0] for a in answers if a.status is None)
    return LoadFigures(
        total=len(answers),
        by_class=dict(Counter(status_class(a.status) for a in answers)),
        by_status=dict(sorted(by_status.items())),
        bad_5xx=sum(n for s, n in by_status.items() if s >= 500 and s != 503),
        no_retry_after=sum(1 for a in answers if a.status == 503 and not a.retry_after),
        unanswered=sum(1 for a in answers if a.status is None),
        empty_ok=sum(1 for a in answers if a.status is not None and 200 <= a.status < 300
                     and (a.status != 200 or a.size <= 2)),
        before_first_kill=len(before),
        ok_before_first_kill=sum(1 for a in before if a.status == 200),
        outages=[_outage_figures(answers, o, t0) for o in outages],
        errors=[f"{k} {v}" for k, v in errors.most_common()],
    )


def _outage_figures(answers: Sequence[Answer], o: Outage, t0: float) -> OutageFigures:
    until = o.ready if o.ready is not None else float("inf")
    down = [a for a in answers if a.ended >= o.killed and a.started <= until]
    return OutageFigures(
        at_s=o.killed - t0, down_s=None if o.ready is None else o.ready - o.killed, requests=len(down),
        answered_503=sum(1 for a in down if a.status == 503),
        slowest_s=max((a.seconds for a in down), default=None), recovery_s=o.recovery_s,
    )


__all__ = ["CLIENT_TIMEOUT_S", "Answer", "LoadFigures", "Outage", "OutageFigures", "Target", "WebLoad",
           "load_figures", "status_class", "targets"]
