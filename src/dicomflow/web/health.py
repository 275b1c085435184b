"""``/healthz``: which dependency of the web tier is down, PostgreSQL or the object store.

The answer is JSON, ``200`` when every required dependency answers, else
``503`` with ``Retry-After``::

    {"status": "ok" | "unavailable",
     "dependencies": {
       "postgres": {"status": "up" | "down", "required": true, "error": "...", "down_for_s": 3.2},
       "storage":  {"status": "up" | "down", "required": true, "backend": "filesystem" | "s3", "error": "..."}}}

``error`` and ``down_for_s`` appear only for a dependency that is down
(``down_for_s``: since the first request that failed). PostgreSQL is asked
``SELECT 1`` through the same pool as the requests (so a check also ends an
outage the requests saw); the filesystem store is its root, a readable and
writable folder; the ``s3`` store one HEAD request. The result is kept for
:data:`CACHE_S`, so a scraper polling every few milliseconds costs one check
a second, and checks never overlap.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from dicomflow.blobs import BlobUnavailable
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
        dependencies = {"postgres": postgres, "storage": storage}
        ok = all(d["status"] == "up" for d in dependencies.values() if d["required"])
        body = {"status": "ok" if ok else "unavailable", "dependencies": dependencies}
        return _Result(time.monotonic(), 200 if ok else 503, body)

    async def _postgres(self) -> dict[str, Any]:
        db = self.ctx.db
        try:
            async with asyncio.timeout(db.wait_s + 1.0), db.connection() as conn:
                await ping(conn)
        except DatabaseUnavailable as exc:
            return {"status": "down", "required": True, "error": exc.problem,
                    "down_for_s": round(db.outage.down_for_s(), 1)}
        except TimeoutError as exc:
            db.unavailable(exc)
            return {"status": "down", "required": True, "error": "no answer to SELECT 1 in time",
                    "down_for_s": round(db.outage.down_for_s(), 1)}
        return {"status": "up", "required": True}

    async def _storage(self) -> dict[str, Any]:
        store = self.ctx.store
        out: dict[str, Any] = {"status": "up", "required": True, "backend": store.backend}
        try:
            async with asyncio.timeout(STORAGE_TIMEOUT_S):
                problem = await run_in_threadpool(self._storage_problem)
        except TimeoutError:
            problem = f"no answer in {STORAGE_TIMEOUT_S:g} s"
        if problem is not None:
            out.update(status="down", error=problem)
        return out

    def _storage_problem(self) -> str | None:
        """What is wrong with the object store, None when it answers (runs in a thread)."""
        store = self.ctx.store
        if store.backend == "s3":
            try:
                store.exists(PROBE_KEY)
            except BlobUnavailable as exc:
                return exc.problem
            return None
        root = str(self.ctx.storage_root)
        if not os.path.isdir(root):
            return f"the storage root {root} is not a folder (not mounted?)"
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            return f"the storage root {root} is not readable and writable"
        return None


__all__ = ["CACHE_S", "HealthCheck"]
