"""The web tier's PostgreSQL: a pool that survives the server's death, and one rule for "unavailable".

Every route reads through :meth:`Database.connection`. While PostgreSQL is
down a request waits at most ``web.db_wait_ms`` for a connection, then fails
with :class:`DatabaseUnavailable`, which the app answers 503 with
``Retry-After`` (never 500, never a traceback). :func:`is_unavailable` is the
one place that decides which errors mean "the database is not there":
``psycopg.OperationalError`` and its subclasses (connection refused or lost,
the server shutting down or starting up, and psycopg_pool's ``PoolTimeout``).
Every other error stays a 500.

:class:`Outage` logs one WARNING when the first request fails and one INFO
line, with the outage's length, when the next one succeeds. A pool timeout
says nothing of its cause, so the first one is explained by one direct
connection attempt: the server's own error is what the warning names, and
when the server answers it the pool was merely busy (every connection in
use for ``db_wait_ms``): 503 as well, but no outage.

Why the pool is configured as it is (psycopg_pool's defaults recover 40-60 s
after PostgreSQL is back):

- ``reconnect_timeout`` is short: the pool retries a failed connection with
  doubling delays (1, 2, 4, ... s) until that timeout, so after a long
  outage its next attempt could be half a minute away. Given up quickly, the
  next request grows the pool afresh and connects at once;
- the ``check`` callback costs nothing on a healthy connection (a zero-timeout
  ``select`` on its socket) and does a round trip only when the socket has
  something to read while idle (the server closed it: it died) or during an
  outage, so a dead connection is thrown away before a request uses it;
- a connection that raised ``OperationalError`` inside a request is closed,
  so the pool discards it rather than lending it again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import select
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dicomflow.errors import DicomflowError
from dicomflow.settings import Settings
from dicomflow.store.connection import first_line

log = logging.getLogger(__name__)

#: How long psycopg_pool keeps retrying a failed connection in the background before it gives up
#: (and lets the next request try afresh).
RECONNECT_TIMEOUT_S = 1.0
#: Longest the direct connection attempt that explains a pool timeout may take.
PROBE_TIMEOUT_S = 0.5


class DatabaseUnavailable(DicomflowError):
    """PostgreSQL could not serve a request: unreachable, restarting, or no connection within ``web.db_wait_ms``.

    Answered 503 with ``Retry-After: retry_after_s``; the original error is ``__cause__``.
    """

    def __init__(self, problem: str, retry_after_s: int = 1) -> None:
        self.problem = problem
        self.retry_after_s = retry_after_s
        super().__init__(f"PostgreSQL unavailable: {problem}")


def is_unavailable(exc: BaseException) -> bool:
    """True for the errors that mean "the database is not there" (503), False for the others (500).

    ``psycopg.OperationalError`` covers connection refused / lost, ``AdminShutdown``,
    ``CannotConnectNow`` (starting up, in recovery) and psycopg_pool's
    ``PoolTimeout``, ``PoolClosed`` and ``TooManyRequests``.
    """
    return isinstance(exc, DatabaseUnavailable | psycopg.OperationalError)


def describe(exc: BaseException) -> str:
    """``Type: first line`` of an error (the first line only: never a quoted value)."""
    return f"{type(exc).__name__}: {first_line(exc)}"


class Outage:
    """Whether PostgreSQL is down as requests see it; one WARNING as it starts, one INFO as it ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        #: When the first failing request saw the outage (``clock()``), None while PostgreSQL answers.
        self.since: float | None = None
        self.problem = ""

    @property
    def down(self) -> bool:
        return self.since is not None

    def down_for_s(self) -> float:
        return 0.0 if self.since is None else self._clock() - self.since

    def failed(self, exc: BaseException) -> None:
        if self.since is not None:
            return
        self.since = self._clock()
        self.problem = describe(exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc)
        log.warning("PostgreSQL unavailable (%s): requests that need it answer 503 until it is back", self.problem)

    def succeeded(self) -> None:
        if self.since is None:
            return
        lasted = self._clock() - self.since
        self.since = None
        log.info("PostgreSQL available again after an outage of %.1f s (%s)", lasted, self.problem)


def _has_input(conn: psycopg.AsyncConnection[Any]) -> bool:
    """True when an idle connection's socket is readable: the server closed it (or sent an error before dying)."""
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


class Database:
    """The web server's pool and its outage state; opened and closed by the app's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.wait_s = settings.web.db_wait_ms / 1000
        #: ``Retry-After`` of a 503: the wait rounded up, at least a second.
        self.retry_after_s = max(1, math.ceil(self.wait_s))
        self.outage = Outage()
        self._conninfo = settings.database.conninfo()
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self._conninfo, min_size=settings.web.db_pool_min, max_size=settings.web.db_pool_max,
            open=False, name="dicomflow-web", timeout=self.wait_s, reconnect_timeout=RECONNECT_TIMEOUT_S,
            check=self._check,
            # Every query of the web server is one read: autocommit spares the BEGIN and COMMIT round trips
            # (two of a WADO-RS lookup's three).
            kwargs={"autocommit": True},
        )

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """psycopg_pool's check before lending a connection: a round trip only when it may be dead."""
        if conn.closed or self.outage.down or _has_input(conn):
            await AsyncConnectionPool.check_connection(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection within ``web.db_wait_ms``; errors of the database become :class:`DatabaseUnavailable`.

        Raises:
            DatabaseUnavailable: no connection in time, or the connection failed while in use.
        """
        try:
            async with self.pool.connection() as conn:
                try:
                    yield conn
                except psycopg.OperationalError:
                    await conn.close()  # never lent again: the pool discards a closed connection
                    raise
        except PoolTimeout as exc:
            cause = await self._why(exc)
            raise (self.unavailable(cause) if cause is not exc else self._busy(exc)) from cause
        except psycopg.OperationalError as exc:
            raise self.unavailable(exc) from exc
        self.outage.succeeded()

    async def _why(self, timeout: PoolTimeout) -> BaseException:
        """Why no connection came in time: the server's own error from one direct connection attempt.

        Only at the first timeout of a possible outage (the log line names the real cause, connection
        refused or the server starting up, not the pool's timeout); ``timeout`` itself when the server
        answers: the pool was only busy.
        """
        if self.outage.down:
            return timeout
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            await conn.close()
        except (psycopg.Error, TimeoutError) as exc:
            return exc
        return timeout

    def _busy(self, exc: PoolTimeout) -> DatabaseUnavailable:
        """Every connection in use for ``db_wait_ms`` while the server answers: 503 too, but no outage."""
        log.debug("no free PostgreSQL connection within %.0f ms: %s", self.wait_s * 1000, exc)
        return DatabaseUnavailable(f"all {self.pool.max_size} connections busy", self.retry_after_s)

    def unavailable(self, exc: BaseException) -> DatabaseUnavailable:
        """``exc`` (one :func:`is_unavailable` accepts) recorded as the outage, as the error the app answers 503.

        A :class:`DatabaseUnavailable` is returned as it is: the outage it stands for was recorded when
        it was made, and one for a merely busy pool (:meth:`_busy`) is no outage at all.
        """
        if isinstance(exc, DatabaseUnavailable):
            return exc
        self.outage.failed(exc)
        return DatabaseUnavailable(describe(exc), self.retry_after_s)


__all__ = ["RECONNECT_TIMEOUT_S", "Database", "DatabaseUnavailable", "Outage", "is_unavailable"]
