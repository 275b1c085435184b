"""Health of a long-running component: is its loop alive, are its dependencies reachable?

The consumer's loop calls :meth:`Health.beat` after every poll; the health
endpoint answers 200 only when the loop is running, polled recently, and
every probe (PostgreSQL reachable ...) passes. Probes are rate-limited, so
a scraper calling ``/healthz`` every second does not open a database
connection every second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dicomflow.settings import DatabaseSettings

log = logging.getLogger(__name__)

#: A probe returns None when healthy, else a short reason.
Probe = Callable[[], str | None]


@dataclass(frozen=True)
class HealthReport:
    """What ``/healthz`` returns."""

    ok: bool
    checks: dict[str, str]


class Health:
    """Liveness of a loop plus cached dependency probes; safe to call from any thread."""

    def __init__(self, max_poll_age_s: float = 60.0, probe_interval_s: float = 5.0) -> None:
        self.max_poll_age_s = max_poll_age_s
        self.probe_interval_s = probe_interval_s
        self._lock = threading.Lock()
        self._running = False
        self._last_beat: float | None = None
        self._probes: dict[str, Probe] = {}
        self._cache: dict[str, tuple[float, str | None]] = {}

    def add_probe(self, name: str, probe: Probe) -> None:
        """Check ``probe`` (at most every ``probe_interval_s``) as part of the health."""
        self._probes[name] = probe

    def started(self) -> None:
        """The loop runs."""
        with self._lock:
            self._running = True
            self._last_beat = time.monotonic()

    def stopped(self) -> None:
        """The loop has ended (health turns bad)."""
        with self._lock:
            self._running = False

    def beat(self) -> None:
        """The loop just polled."""
        self._last_beat = time.monotonic()

    def poll_age_s(self) -> float | None:
        """Seconds since the loop last polled (None before it started)."""
        last = self._last_beat
        return None if last is None else time.monotonic() - last

    def report(self) -> HealthReport:
        """Run (or reuse) the probes and judge the loop."""
        checks: dict[str, str] = {}
        with self._lock:
            running, last = self._running, self._last_beat
        if not running:
            checks["loop"] = "not running"
        elif last is None or time.monotonic() - last > self.max_poll_age_s:
            checks["loop"] = f"no poll for more than {self.max_poll_age_s:.0f} s"
        else:
            checks["loop"] = "ok"
        for name, probe in self._probes.items():
            problem = self._probe(name, probe)
            checks[name] = problem or "ok"
        return HealthReport(ok=all(v == "ok" for v in checks.values()), checks=checks)

    def _probe(self, name: str, probe: Probe) -> str | None:
        now = time.monotonic()
        cached = self._cache.get(name)
        if cached is not None and now - cached[0] < self.probe_interval_s:
            return cached[1]
        try:
            problem = probe()
        except Exception as exc:  # noqa: BLE001 - an observer must not fail the caller
            problem = f"{type(exc).__name__}: {exc}"
        self._cache[name] = (now, problem)
        return problem


def postgres_probe(db: DatabaseSettings, timeout_s: int = 2) -> Probe:
    """A probe that opens a connection and runs ``SELECT 1``."""

    def probe() -> str | None:
        import psycopg

        try:
            with psycopg.connect(db.conninfo(), connect_timeout=timeout_s, autocommit=True) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"unreachable: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
        return None

    return probe


__all__ = ["Health", "HealthReport", "Probe", "postgres_probe"]
