"""The web fuzz phase: ``dicomflow web`` (OAuth2, a small ``web.max_stow_bytes``) and a consumer, on loopback.

Order: start the server and a consumer on the phase's own topics and
database; store a few good instances by STOW-RS and wait until they are
indexed (so WADO-RS routes find data); sweep every route with every method;
send the mutated requests from a few threads; let the consumer drain; then
judge: no 5xx, no dropped connection, no traceback in the server's log,
every STOW part answered Success indexed and none refused.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dicomflow.settings import OAuth2Settings, Settings, to_child_env
from dicomflow.stack import free_ports
from dicomflow_faults.checks import read_change_history, read_rows, wait_drained
from dicomflow_faults.instances import build_template, make_uid
from dicomflow_faults.privstack import SHARED_PORTS, PrivateStack
from dicomflow_faults.supervisor import Component, component_env, port_open
from dicomflow_faults.webfuzz.bodies import Body, BodyMaker, multipart
from dicomflow_faults.webfuzz.client import exchange
from dicomflow_faults.webfuzz.requests import FAMILIES, Known, Request, RequestMaker, RouteInfo, routes_of, serialize
from dicomflow_faults.webfuzz.tokens import AUDIENCE, ISSUER, TokenKit, make_kit
from dicomflow_faults.webfuzz.verdict import WebFuzzResult, log_problems, stow_outcome

log = logging.getLogger(__name__)

#: ``web.max_stow_bytes`` of the phase: small, so oversized bodies stay cheap to send.
MAX_STOW_BYTES = 256 * 1024
#: Good instances stored before the fuzz (two series of one study).
SEEDED = 4


def web_settings(base: Settings, jwks: Path, port: int) -> Settings:
    oauth2 = OAuth2Settings(jwks=str(jwks), issuer=ISSUER, audience=AUDIENCE, tenant_claim="tenant")
    web = dataclasses.replace(base.web, host="127.0.0.1", port=port, workers=1, auth="oauth2", oauth2=oauth2,
                              max_stow_bytes=MAX_STOW_BYTES, db_pool_max=4)
    return dataclasses.replace(base, web=web)


def run_web_fuzz(stack: PrivateStack, requests: int, *, seed: int, log_dir: Path, clients: int = 8,
                 budget_s: float = 240.0, progress: Callable[[int], None] | None = None) -> WebFuzzResult:
    """Fuzz a ``dicomflow web`` of the phase's own with ``requests`` mutated requests (plus the sweep).

    Raises:
        RuntimeError: the server did not start, or the seed instances were not stored and indexed.
    """
    from dicomflow.web.app import create_app

    rng = random.Random(seed)
    phase = stack.new_phase("web")
    kit = make_kit(stack.phase_dir(phase), phase.settings.storage.default_tenant)
    port = free_ports(1, avoid=SHARED_PORTS)[0]
    settings = web_settings(phase.settings, kit.jwks_path, port)
    env = component_env(to_child_env(settings))
    web = Component("web-fuzz", ["--log-level", "WARNING", "web"], env, log_dir, cwd=log_dir)
    consumer = Component("web-fuzz-consumer", ["consume"], env, log_dir, cwd=log_dir)
    result = WebFuzzResult(requests)
    t0 = time.monotonic()
    run = rng.randrange(10**7, 10**8)
    study = make_uid(run, 1, 1)
    bodies = BodyMaker(build_template("CT"), run, study, MAX_STOW_BYTES)
    host = f"127.0.0.1:{port}"
    web.start()
    consumer.start()
    try:
        _wait_up(web, port)
        known = _seed(port, bodies, kit, host, rng, settings)
        maker = RequestMaker(routes_of(create_app(settings, publish_audit=False)), known, kit, bodies, host)
        result.routes = len(maker.routes)
        plan: list[tuple[str, int, tuple[RouteInfo, str] | None]] = [("sweep", rng.randrange(1 << 30), s) for s in maker.sweep()]
        plan += [(rng.choice(FAMILIES), rng.randrange(1 << 30), None) for _ in range(requests)]
        result.requested = len(plan)
        started = time.monotonic()
        deadline = started + budget_s

        def one(item: tuple[str, int, tuple[RouteInfo, str] | None]) -> tuple[Request, int | None, str, bytes]:
            family, s, sweep = item
            request = maker.build(family, s, sweep)
            if time.monotonic() > deadline:
                return request, None, "skipped", b""
            answer = exchange(port, request)
            return request, answer.status, answer.outcome, answer.body

        with ThreadPoolExecutor(max_workers=clients) as pool:
            for i, (request, status, outcome, body) in enumerate(pool.map(one, plan)):
                if outcome == "skipped":
                    continue
                result.record(request.family, f"{request.method} {request.route} ({request.family})", status, outcome)
                if request.method == "DELETE" and status == 204:
                    result.deletes_answered += 1
                if request.body is not None:
                    ok, refused = stow_outcome(status, body, request.body.sop_uids + request.body.damaged_uids)
                    result.stow_success |= ok
                    result.stow_refused |= refused
                if progress is not None and (i + 1) % 1000 == 0:
                    progress(i + 1)
        result.fuzz_seconds = time.monotonic() - started
        result.web_crashed = not web.alive()
        result.drained = wait_drained(settings.kafka, settings.topics, timeout_s=120.0)
        indexed = read_rows(settings.database).sop_uids
        ever, deleted = read_change_history(settings.database)
        result.stow_refused -= result.stow_success
        # The sweep and the path family also send DELETE with a good token, so
        # an instance answered Success may be gone again: it counts as indexed
        # when the change log recorded its create and its newest change is a
        # delete, and only once some DELETE was answered 204.
        result.deleted = result.stow_success & (deleted - indexed)
        gone_unexplained = result.deleted if result.deletes_answered == 0 else set()
        result.success_not_indexed = (result.stow_success - ever) | (result.stow_success - indexed - deleted) | gone_unexplained
        result.refused_indexed = result.stow_refused & (indexed | ever)
        result.lost = len(result.success_not_indexed)
    finally:
        web.terminate()
        consumer.terminate()
        result.seconds = time.monotonic() - t0
    lines = log_problems(web.log_path)
    result.tracebacks, result.traceback_lines = len(lines), lines[:5]
    return result


def _wait_up(web: Component, port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not port_open(port):
        if not web.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"dicomflow web did not start: {web.log_tail()}")
        time.sleep(0.2)


def _seed(port: int, bodies: BodyMaker, kit: TokenKit, host: str, rng: random.Random, settings: Settings) -> list[Known]:
    """Store :data:`SEEDED` good instances by STOW-RS and wait until the consumer indexed them."""
    pairs = [bodies.instance(rng, counter=n) for n in range(SEEDED)]
    boundary = "fuzzseed"
    data = multipart(boundary, [d for _, d in pairs])
    headers = [("Host", host), ("Authorization", f"Bearer {kit.good()}"), ("Content-Length", str(len(data))),
               ("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')]
    request = Request("seed", serialize("POST", "/studies", headers, data), "/studies", "POST",
                      Body(headers[-1][1], data, [u for u, _ in pairs]))
    answer = exchange(port, request, timeout_s=60.0)
    if answer.status != 200:
        raise RuntimeError(f"the seed STOW-RS answered {answer.status or answer.outcome}: {answer.body[:300]!r}")
    sops = {u for u, _ in pairs}
    deadline = time.monotonic() + 90
    while not sops <= read_rows(settings.database).sop_uids:
        if time.monotonic() > deadline:
            raise RuntimeError("the seed instances were not indexed within 90 s")
        time.sleep(0.5)
    return [Known(bodies.study_uid, make_uid(bodies.run, 2, n % 7), u) for n, (u, _) in enumerate(pairs)]


__all__ = ["MAX_STOW_BYTES", "run_web_fuzz", "web_settings"]
