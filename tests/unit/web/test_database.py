"""Which errors are a database outage (503) and which stay 500; the outage logged once, its end once.

The app tests point the server at a port where nothing listens (a real
connection refused, no fake of PostgreSQL) and add routes that raise psycopg's
own error classes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import errors as pg_errors
from psycopg_pool import PoolTimeout
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import dicomflow.web
from dicomflow.settings import Settings, load_settings
from dicomflow.stack import free_port
from dicomflow.web.app import READ_ROUTES, create_app
from dicomflow.web.context import WebContext
from dicomflow.web.database import DatabaseUnavailable, Outage, is_unavailable


@pytest.mark.parametrize("exc", [
    psycopg.OperationalError("connection refused"),
    pg_errors.AdminShutdown("terminating connection due to administrator command"),
    pg_errors.CannotConnectNow("the database system is starting up"),
    PoolTimeout("couldn't get a connection after 1.00 sec"),
    DatabaseUnavailable("no connection"),
])
def test_the_database_gone_is_unavailable(exc: BaseException) -> None:
    assert is_unavailable(exc)


@pytest.mark.parametrize("exc", [
    pg_errors.UndefinedTable("relation does not exist"),
    pg_errors.SyntaxError("syntax error"),
    psycopg.DataError("invalid input"),
    psycopg.InterfaceError("bad use"),
    ValueError("a bug"),
])
def test_other_errors_are_not(exc: BaseException) -> None:
    assert not is_unavailable(exc)


def test_an_outage_is_logged_once_and_its_end_once_with_its_length(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="dicomflow.web.database")
    assert not outage.down
    outage.succeeded()  # nothing to recover from: silent
    for _ in range(3):
        outage.failed(psycopg.OperationalError("connection refused\nIs the server running?"))
    assert outage.down
    now[0] = 112.5
    assert outage.down_for_s() == 12.5
    outage.succeeded()
    outage.succeeded()
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (logging.WARNING, "PostgreSQL unavailable (OperationalError: connection refused): requests that need it "
                          "answer 503 until it is back"),
        (logging.INFO, "PostgreSQL available again after an outage of 12.5 s (OperationalError: connection refused)"),
    ]
    assert not outage.down


def _raising(ctx: WebContext) -> Sequence[BaseRoute]:
    async def operational(request: Request) -> Response:
        raise pg_errors.AdminShutdown("terminating connection due to administrator command")

    async def programming(request: Request) -> Response:
        raise pg_errors.UndefinedTable("relation \"dicom_state_meta\" does not exist")

    return [Route("/raise/operational", operational), Route("/raise/programming", programming)]


def _settings_without_database(wait_ms: int = 300) -> Settings:
    base = load_settings(None, {})
    return dataclasses.replace(
        base, database=dataclasses.replace(base.database, host="127.0.0.1", port=free_port()),
        web=dataclasses.replace(base.web, auth="none", db_wait_ms=wait_ms))


def test_requests_answer_503_with_retry_after_within_the_wait_when_nothing_listens(
        caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(_settings_without_database(300), route_factories=(*READ_ROUTES, _raising), publish_audit=False)
    caplog.set_level(logging.INFO)

    async def run() -> None:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/studies", "/studies/1.2.3/series/1.2.3.4/metadata",
                         "/studies/1.2.3/series/1.2.3.4/instances/1.5", "/raise/operational"):
                started = time.monotonic()
                r = await client.get(path)
                took = time.monotonic() - started
                assert r.status_code == 503, (path, r.text)
                assert r.headers["retry-after"] == "1"
                assert took < 0.3 + 1.0, (path, took)
            health = await client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["status"] == "unhealthy"
            assert health.json()["checks"]["postgresql"].startswith("unavailable for ")
            assert (await client.get("/raise/programming")).status_code == 500

    asyncio.run(run())
    warnings = [r for r in caplog.records if r.name == "dicomflow.web.database" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "Connection refused" in warnings[0].getMessage()  # the server's own error, not the pool's timeout
    # Only the programming error, a 500, is logged with its traceback.
    with_traceback = [r for r in caplog.records if r.exc_info]
    assert [r.getMessage() for r in with_traceback] == ["GET /raise/programming failed"]


def test_a_busy_pool_answers_503_but_is_no_outage(caplog: pytest.LogCaptureFixture) -> None:
    """Every connection in use while the server answers (as the pool refills after an outage): no WARNING.

    The app's 503 handler passes every DatabaseUnavailable through ``unavailable``; a busy one recorded
    there had logged a second, zero-length outage right after the real one ended.
    """
    from dicomflow.web.database import Database

    db = Database(_settings_without_database())
    caplog.set_level(logging.INFO, logger="dicomflow.web.database")
    busy = db._busy(PoolTimeout("couldn't get a connection after 1.00 sec"))
    assert db.unavailable(busy) is busy
    assert busy.retry_after_s == 1 and "busy" in busy.problem
    assert not db.outage.down
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    refused = db.unavailable(psycopg.OperationalError("connection refused"))
    assert db.outage.down and refused.retry_after_s == 1
    assert db.unavailable(refused) is refused
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


def test_every_route_takes_its_connection_through_database_connection() -> None:
    # The pool's own connection() lets a PoolTimeout of a merely busy pool reach the app's 503 handler,
    # which records it as an outage (a second "PostgreSQL unavailable" right after a recovery, seen in CI).
    web = Path(dicomflow.web.__file__).parent
    raw = [f"{path.name}:{number}" for path in sorted(web.glob("*.py")) if path.name != "database.py"
           for number, line in enumerate(path.read_text().splitlines(), 1) if "pool.connection(" in line]
    assert raw == []
