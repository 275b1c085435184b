"""The web phase: QIDO-RS and WADO-RS load on ``dicomflow web`` while PostgreSQL is SIGKILLed and restarted.

A small corpus is indexed the way the soak does it (files under the phase's
storage root, their store events published, ``dicomflow consume
--until-idle`` drains them), then ``dicomflow web`` (``auth = "none"``, on a
free 127.0.0.1 port, its log in the phase's log folder) serves it to a few
client threads (:mod:`.webload`). Meanwhile the PostgreSQL postmaster (its
PID only) is SIGKILLed a few times, left down a while and restarted: the
outages alternate between a short one (4 s) and a long one (12 s), after
which a connection pool's doubling reconnect back-off would show as a slow
recovery.

What the web tier must do (issue 19): while PostgreSQL is down, answer 503
with ``Retry-After`` within ``web.db_wait_ms`` (never another 5xx, never a
traceback in its log); once PostgreSQL is ready again, answer 200 within
5 s. The checks read the clients' answers and the server's log, never the
server's own counters.
"""

from __future__ import annotations

import dataclasses
import http.client
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import Settings, to_child_env
from dicomflow.stack import free_ports
from dicomflow_faults.checks import Check, read_rows, subset_check
from dicomflow_faults.instances import Generated, generate
from dicomflow_faults.privstack import SHARED_PORTS, Phase, PrivateStack
from dicomflow_faults.supervisor import Component, Supervisor, component_env
from dicomflow_faults.webload import LoadFigures, Outage, WebLoad, load_figures, targets

log = logging.getLogger(__name__)

#: Seconds PostgreSQL stays down after each kill, in turn: short, then long enough for a pool's doubling
#: reconnect back-off (1, 2, 4, 8 s ...) to grow past the 5 s recovery target.
DOWN_S: tuple[float, ...] = (4.0, 12.0)

#: What marks an unexpected exception in the server's log.
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class WebFaultResult:
    """Figures and verdicts of the web phase."""

    seconds: float
    kills: int
    instances: int = 0
    series: int = 0
    index_s: float = 0.0
    clients: int = 0
    load_s: float = 0.0
    down_s: tuple[float, ...] = DOWN_S
    figures: LoadFigures | None = None
    tracebacks: int = 0
    #: Lines of the server's log at WARNING and at ERROR or above (the issue asks one warning per outage).
    log_warnings: int = 0
    log_errors: int = 0
    web_log: str = ""
    crashes: int = 0
    recovery_target_s: float = 5.0
    down_target_s: float = 3.0
    checks: list[Check] = field(default_factory=list)


def run_web_faults(stack: PrivateStack, seconds: float, *, seed: int, log_dir: Path, kills: int = 2,
                   instances: int = 120, clients: int = 4, down_s: tuple[float, ...] = DOWN_S,
                   recovery_target_s: float = 5.0,
                   down_target_s: float | None = None) -> WebFaultResult:
    """Index a corpus, serve it with ``dicomflow web``, load it for ``seconds`` while PostgreSQL is killed ``kills`` times.

    ``down_target_s``: the slowest answer allowed while PostgreSQL is down;
    by default the server's ``web.db_wait_ms`` plus 2 s (a loaded two-core machine).

    Raises:
        StackError: the corpus could not be indexed, the server did not start, PostgreSQL did not restart.
    """
    phase = stack.new_phase("web_outage", partitions=1)  # "web" is the web fuzz phase's, on the same stack
    t0 = time.monotonic()
    generated = generate(phase.settings.storage.root, instances, seed=seed, worker_node_id="faults-web",
                         min_per_series=10, max_per_series=30)
    index_check = _index(phase, generated, log_dir)
    wait_s = phase.settings.web.db_wait_ms / 1000
    result = WebFaultResult(seconds=seconds, kills=kills, clients=clients, down_s=down_s,
                            recovery_target_s=recovery_target_s,
                            down_target_s=down_target_s if down_target_s is not None else wait_s + 2.0)
    result.index_s = time.monotonic() - t0
    result.instances, result.series = len(generated.instances), len(generated.series)
    log.info("web: %d instances in %d series indexed in %.1f s", result.instances, result.series, result.index_s)

    settings = _web_settings(phase.settings)
    supervisor = Supervisor(restart_crashed=True)
    web = supervisor.add(Component("web", ["web"], component_env(to_child_env(settings)), log_dir, cwd=log_dir))
    web.start()
    supervisor.start_watching()
    try:
        _wait_healthy(settings.web.port, web)
        by_series: dict[str, list[str]] = {}
        for inst in generated.instances:
            by_series.setdefault(inst.event.series_uid, []).append(inst.sop_uid)
        load = WebLoad(settings.web.port, targets(generated.series, by_series), clients=clients, seed=seed)
        started = time.monotonic()
        load.start()
        try:
            outages = _inject(stack, load, started, seconds, kills, down_s, recovery_target_s, random.Random(seed))
        finally:
            load.stop()
        result.load_s = time.monotonic() - started
        result.figures = load_figures(load.snapshot(), outages, started)
    finally:
        supervisor.stop_watching()
        web.terminate(timeout_s=30.0)
    result.crashes = len(supervisor.crashes())
    _read_log(result, web.log_path)
    result.checks = [index_check, *web_checks(result)]
    return result


def _index(phase: Phase, generated: Generated, log_dir: Path) -> Check:
    """Publish the corpus's store events and let one consumer drain them; the check that all are rows."""
    from dicomflow.kafka.producer import Publisher

    with Publisher(phase.settings.kafka, phase.settings.topics, client_id="faults-web") as publisher:
        publisher.send_store_events([i.event for i in generated.instances], with_receipt=False).raise_for_failures()
    consumer = Component("web-consumer", ["consume", "--until-idle", "3"], component_env(phase.env()), log_dir,
                         cwd=log_dir, finite=True)
    consumer.start()
    code = consumer.wait(120.0)
    if code is None:
        consumer.terminate()
        raise StackError(f"web: the consumer did not index the corpus within 120 s (log: {consumer.log_path})")
    check, missing = subset_check("web: the corpus is indexed before the load", generated.sop_uids,
                                  read_rows(phase.settings.database).sop_uids)
    if missing:
        raise StackError(f"web: {len(missing)} of {len(generated.instances)} instances not indexed "
                         f"(consumer exit code {code}, log: {consumer.log_path})")
    return check


def _web_settings(settings: Settings) -> Settings:
    """The phase's settings for ``dicomflow web``: a free local port, no authentication, no viewer."""
    port = free_ports(1, avoid=SHARED_PORTS)[0]
    web = dataclasses.replace(settings.web, host="127.0.0.1", port=port, workers=1, auth="none",
                              viewer=dataclasses.replace(settings.web.viewer, enabled=False))
    return dataclasses.replace(settings, web=web)


def _wait_healthy(port: int, web: Component, timeout_s: float = 60.0) -> None:
    """Until ``/healthz`` answers 200.

    Raises:
        StackError: the server exited, or was not healthy within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not web.alive():
            raise StackError(f"dicomflow web exited at start:\n{web.log_tail()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()
        time.sleep(0.2)
    raise StackError(f"dicomflow web was not healthy within {timeout_s:.0f} s:\n{web.log_tail()}")


def _inject(stack: PrivateStack, load: WebLoad, started: float, seconds: float, kills: int,
            down_s: tuple[float, ...], recovery_target_s: float, rng: random.Random) -> list[Outage]:
    """SIGKILL PostgreSQL ``kills`` times, evenly over the load (a little jitter), kill k down ``down_s[k % n]``.

    After each restart the load is watched for its first 200 until the next
    kill is due (at least twice the recovery target); then the load runs on
    until ``seconds`` have passed.

    Raises:
        StackError: PostgreSQL did not come back.
    """
    warm = min(3.0, seconds / 10)
    slot = (seconds - warm) / max(kills, 1)
    outages: list[Outage] = []
    for k in range(kills):
        _sleep_until(started + warm + k * slot + rng.uniform(0.0, min(1.0, slot / 10)))
        killed = time.monotonic()
        log.info("web: SIGKILL of PostgreSQL #%d at %.1f s into the load", k + 1, killed - started)
        stack.kill_postgres()
        _sleep_until(killed + down_s[k % len(down_s)])
        stack.start_postgres()
        ready = time.monotonic()
        deadline = max(started + warm + (k + 1) * slot, ready + 2 * recovery_target_s)
        first_ok = load.ok_since(ready)
        while first_ok is None and time.monotonic() < deadline:
            time.sleep(0.05)
            first_ok = load.ok_since(ready)
        log.info("web: PostgreSQL ready %.1f s after the kill; first 200 %s", ready - killed,
                 "none" if first_ok is None else f"{first_ok - ready:.2f} s later")
        outages.append(Outage(killed, ready, first_ok))
    _sleep_until(started + seconds)
    return outages


def _sleep_until(t: float) -> None:
    pause = t - time.monotonic()
    if pause > 0:
        time.sleep(pause)


def _read_log(result: WebFaultResult, path: Path) -> None:
    """Tracebacks and WARNING / ERROR lines of the server's log (both its logging and uvicorn's formats)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    result.web_log = str(path)
    result.tracebacks = text.count(TRACEBACK)
    for line in text.splitlines():
        if " WARNING " in line or line.startswith("WARNING:"):
            result.log_warnings += 1
        elif any(f" {lvl} " in line or line.startswith(f"{lvl}:") for lvl in ("ERROR", "CRITICAL")):
            result.log_errors += 1


def web_checks(r: WebFaultResult) -> list[Check]:
    """The phase's verdicts from its figures (``r.figures`` None: the load never ran)."""
    f = r.figures
    if f is None:
        return [Check("web: the load ran", False, "no figures")]
    slowest = f.slowest_down_s
    recoveries = ", ".join("none" if o.recovery_s is None else f"{o.recovery_s:.2f} s" for o in f.outages)
    return [
        Check("web: every request made before the first kill answered 200",
              f.before_first_kill > 0 and f.ok_before_first_kill == f.before_first_kill,
              f"{f.ok_before_first_kill} of {f.before_first_kill}"),
        Check("web: no 5xx other than 503", f.bad_5xx == 0,
              f"{f.bad_5xx} of {f.total} (" + ", ".join(f"{s}: {n}" for s, n in f.by_status.items()) + ")"),
        Check("web: every 2xx is a 200 with content (no empty result in place of an outage)", f.empty_ok == 0,
              f"{f.empty_ok} empty or not 200"),
        Check("web: every 503 carries Retry-After", f.no_retry_after == 0, f"{f.no_retry_after} without it"),
        Check("web: every request answered (no reset, refusal or client timeout)", f.unanswered == 0,
              f"{f.unanswered} unanswered" + (f" ({', '.join(f.errors)})" if f.errors else "")),
        Check(f"web: answers while PostgreSQL was down within {r.down_target_s:g} s",
              slowest is not None and slowest <= r.down_target_s and all(o.requests > 0 for o in f.outages),
              "slowest " + ("-" if slowest is None else f"{slowest:.2f} s") + " over "
              + ", ".join(str(o.requests) for o in f.outages) + " request(s) in flight while down"),
        Check(f"web: 200 again within {r.recovery_target_s:g} s of PostgreSQL ready, every outage",
              len(f.outages) == r.kills and all(o.recovery_s is not None and o.recovery_s <= r.recovery_target_s
                                                for o in f.outages),
              f"{len(f.outages)} outage(s): {recoveries or '-'}"),
        Check("web: no traceback in the server's log", r.tracebacks == 0, f"{r.tracebacks} in {r.web_log}"),
        Check("web: the server never exited by itself", r.crashes == 0, f"{r.crashes} unexpected exit(s)"),
    ]


__all__ = ["DOWN_S", "TRACEBACK", "WebFaultResult", "run_web_faults", "web_checks"]
