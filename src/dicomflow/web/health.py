"""``/healthz``: which dependency of the web tier is down, PostgreSQL or the storage.

The answer has the shape of every dicomflow component's ``/healthz``
(:mod:`dicomflow.metrics.server`): ``200`` when every dependency answers,
else ``503`` with ``Retry-After``; each check is ``"ok"`` or what is wrong::

    {"status": "ok", "checks": {"postgresql": "ok", "storage": "ok"}}
    {"status": "unhealthy",
     "checks": {"postgresql": "unavailable for 3.2 s: OperationalError: connection failed: ...",
                "storage": "ok"}}

PostgreSQL is asked ``SELECT 1`` through the requests' own pool (so a check
also ends an outage the requests saw; "for N s" counts from the first
request that failed); a filesystem store must take a file created, written,
synced and removed under its root (the receiver's probe,
:func:`dicomflow.metrics.receiver.storage_probe`); an ``s3`` store must
answer one HEAD request. The result is kept for :data:`CACHE_S`, so a
scraper polling every few milliseconds costs one check a second, and checks
never overlap.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomflow.blobs import BlobUnavailable
from dicomflow.metrics.receiver import storage_probe
from dicomflow.store.queries import ping
from dicomflow.web.context import WebContext
from dicomflow.web.database import DatabaseUnavailable

#: Seconds one health result is served before the dependencies are asked again.
CACHE_S = 1.0
#: The key whose HEAD proves an s3 store reachable (absent is fine: only the answer matters).
PROBE_KEY = ".dicomflow-healthz"
#: Longest the object store may take to answer the check.
STORAGE_TIMEOUT_S = 2.0


@dataclass
class _Result:
    at: float
    status: int
    body: dict[str, Any]


class HealthCheck:
    """The checks of one server process, and the last result."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self._last: _Result | None = None
        self._filesystem_probe = storage_probe(ctx.storage_root)
        self._lock = asyncio.Lock()

    async def respond(self, request: Request) -> Response:
        """The endpoint: the last result (at most CACHE_S old) as JSON."""
        result = await self.result()
        headers = {"Retry-After": str(self.ctx.db.retry_after_s)} if result.status != 200 else None
        return JSONResponse(result.body, status_code=result.status, headers=headers)

    async def result(self) -> _Result:
        async with self._lock:
            if self._last is None or time.monotonic() - self._last.at >= CACHE_S:
                self._last = await self._check()
            return self._last

    async def _check(self) -> _Result:
        postgres, storage = await asyncio.gather(self._postgres(), self._storage())
        checks = {"postgresql": postgres or "ok", "storage": storage or "ok"}
        ok = postgres is None and storage is None
        return _Result(time.monotonic(), 200 if ok else 503, {"status": "ok" if ok else "unhealthy", "checks": checks})

    async def _postgres(self) -> str | None:
        db = self.ctx.db
        try:
            async with asyncio.timeout(db.wait_s + 1.0), db.connection() as conn:
                await ping(conn)
        except DatabaseUnavailable as exc:
            return f"unavailable for {db.outage.down_for_s():.1f} s: {exc.problem}"
        except TimeoutError as exc:
            db.unavailable(exc)
            return f"unavailable for {db.outage.down_for_s():.1f} s: no answer to SELECT 1 in time"
        return None

    async def _storage(self) -> str | None:
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S):
                return await run_in_threadpool(self._storage_problem)
        except TimeoutError:
            return f"no answer in {STORAGE_TIMEOUT_S:g} s"

    def _storage_problem(self) -> str | None:
        """What is wrong with the store, None when it answers (runs in a thread)."""
        store = self.ctx.store
        if store.backend != "s3":
            return self._filesystem_probe()
        try:
            store.exists(PROBE_KEY)
        except BlobUnavailable as exc:
            return f"s3 unavailable: {exc.problem}"
        return None


__all__ = ["CACHE_S", "HealthCheck"]
