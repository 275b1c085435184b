"""The DICOMweb ASGI application (Starlette): ``create_app(settings)``.

Why Starlette rather than FastAPI: DICOMweb answers are multipart bodies and
DICOM JSON that the handlers build themselves; a validation / OpenAPI layer
would add per-request cost (the QIDO-RS latency target) and nothing the
standard's own query grammar does not already define. uvicorn serves it.

Routes come from *route factories*, ``factory(ctx) -> list[BaseRoute]``:
:data:`READ_ROUTES` are QIDO-RS, WADO-RS and rendered resources;
:data:`ALL_ROUTES` (the default of :func:`create_app`) adds STOW-RS, DELETE and the change feed.
Besides them the app
serves ``/healthz`` (:mod:`dicomflow.web.health`: per dependency, 503 when
PostgreSQL or the object store is down) and ``/metrics`` (Prometheus,
``dicomflow_web_*``), both without authentication.

Errors become statuses in one place, the exception handlers here: an
``HTTPException`` its own status; the database unavailable (any error
:func:`dicomflow.web.database.is_unavailable` accepts) 503 with
``Retry-After`` and no traceback (:class:`~dicomflow.web.database.Outage`
logs the outage once); the object store unavailable 503, an object missing
404 (for a storage error no route turned into a status); anything else 500,
logged with its traceback.

Everything is read from PostgreSQL and the storage root on demand; nothing
is loaded at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicomflow.blobs import BlobNotFound, BlobUnavailable
from dicomflow.metrics.web import WebMetrics
from dicomflow.settings import Settings
from dicomflow.web import changefeed, delete, frames, qido, rendered, stow, viewer, wado
from dicomflow.web.auth import Authenticator
from dicomflow.web.context import RETRY_AFTER_S, WebContext
from dicomflow.web.cors import Cors
from dicomflow.web.database import Database, DatabaseUnavailable, is_unavailable
from dicomflow.web.health import HealthCheck
from dicomflow.web.validate import RequestValidation

log = logging.getLogger(__name__)

RouteFactory = Callable[[WebContext], Sequence[BaseRoute]]

#: The read side: QIDO-RS searches, WADO-RS retrieval, rendered images and thumbnails.
READ_ROUTES: tuple[RouteFactory, ...] = (qido.routes, wado.routes, frames.routes, rendered.routes)
#: Everything the server serves: the read side, STOW-RS, DELETE, the change feed and the OHIF viewer (``/viewer/``).
ALL_ROUTES: tuple[RouteFactory, ...] = (*READ_ROUTES, stow.routes, delete.routes, changefeed.routes, viewer.routes)


class _Metrics:
    """ASGI middleware: count every request by route template and status, time it to the body's end."""

    def __init__(self, app: ASGIApp, metrics: WebMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope.get("method", ""), str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=exc.headers)


def _database_unavailable(ctx: WebContext) -> Callable[[Request, Exception], Awaitable[Response]]:
    """503 with ``Retry-After`` for a database outage: no traceback, the outage is logged once by ``ctx.db``."""

    async def handle(request: Request, exc: Exception) -> Response:
        error = ctx.db.unavailable(exc)
        return PlainTextResponse("the database is unavailable; retry later\n", status_code=503,
                                 headers={"Retry-After": str(error.retry_after_s)})

    return handle


async def _storage_error(request: Request, exc: Exception) -> Response:
    """An object store error no route turned into a status: missing 404, unavailable 503."""
    if isinstance(exc, BlobNotFound):
        log.error("%s %s: object %s is missing", request.method, request.url.path, exc.where)
        return PlainTextResponse("the instance's file is missing from storage\n", status_code=404)
    assert isinstance(exc, BlobUnavailable)
    log.warning("%s %s: object store unavailable: %s", request.method, request.url.path, exc.problem)
    return PlainTextResponse("the storage is unavailable; retry later\n", status_code=503,
                             headers={"Retry-After": str(RETRY_AFTER_S)})


def _unexpected(ctx: WebContext) -> Callable[[Request, Exception], Awaitable[Response]]:
    """500 with the traceback logged, unless the error is the database's (an outage that escaped the routes)."""
    database = _database_unavailable(ctx)

    async def handle(request: Request, exc: Exception) -> Response:
        if is_unavailable(exc):
            return await database(request, exc)
        log.exception("%s %s failed", request.method, request.url.path)
        return PlainTextResponse("internal error (logged)\n", status_code=500)

    return handle


def create_app(
    settings: Settings,
    *,
    route_factories: Sequence[RouteFactory] = ALL_ROUTES,
    registry: CollectorRegistry | None = None,
    publish_audit: bool = True,
) -> Starlette:
    """The DICOMweb application for ``settings``.

    ``publish_audit=False`` leaves the Kafka publisher out (tools that only
    read); the server always publishes.

    Raises:
        ConfigError: an authentication setting is missing or the key set unreadable.
    """
    registry = registry or CollectorRegistry()
    metrics = WebMetrics(registry)
    auth = Authenticator(settings)
    ctx = WebContext(settings=settings, auth=auth, metrics=metrics, db=Database(settings))
    routes = _service_routes(ctx, registry)
    for factory in route_factories:
        routes.extend(factory(ctx))
    database = _database_unavailable(ctx)
    app = Starlette(
        routes=routes, lifespan=_lifespan(ctx, publish_audit=publish_audit),
        # Handlers of specific classes answer inside the app; the ``Exception`` one (ServerErrorMiddleware)
        # re-raises after answering, so the server logs a traceback: an outage must not get there.
        exception_handlers={HTTPException: _http_error, DatabaseUnavailable: database,
                            psycopg.OperationalError: database, BlobNotFound: _storage_error,
                            BlobUnavailable: _storage_error, Exception: _unexpected(ctx)},
    )
    app.add_middleware(RequestValidation)  # innermost: its 400s get CORS headers and are counted
    if settings.web.cors_origins:
        app.add_middleware(Cors, origins=settings.web.cors_origins)  # inside _Metrics: preflights are counted
    app.add_middleware(_Metrics, metrics=metrics)
    app.state.ctx = ctx
    return app


def _service_routes(ctx: WebContext, registry: CollectorRegistry) -> list[BaseRoute]:
    """``/healthz`` (per dependency, see :mod:`dicomflow.web.health`) and ``/metrics``, without authentication."""

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", HealthCheck(ctx).respond), Route("/metrics", metrics_endpoint)]


def _lifespan(ctx: WebContext, *, publish_audit: bool) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """Open the pool (and the audit publisher) at start; at the end audit the stop, drain the queue, close."""
    settings = ctx.settings

    def activity(started: bool) -> None:
        from dicomflow.audit import events as audit

        ctx.audit([audit.application_activity(started=started, node_id=settings.worker_node_id,
                                              tenant_id=settings.storage.default_tenant, application="web")])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ctx.auth.warn_if_open()
        await ctx.pool.open(wait=False)
        if publish_audit:
            from dicomflow.kafka.producer import Publisher
            from dicomflow.web.auditing import AuditSender

            ctx.publisher = Publisher(settings.kafka, settings.topics, client_id="dicomflow-web")
            ctx.auditor = AuditSender(ctx.publisher, ctx.metrics)
            activity(started=True)
        try:
            yield
        finally:
            if ctx.publisher is not None:
                activity(started=False)
                if ctx.auditor is not None:
                    await asyncio.to_thread(ctx.auditor.close, 30.0)  # publishes what is still queued
                await asyncio.to_thread(ctx.publisher.close, 10.0)
            await ctx.pool.close()

    return lifespan


__all__ = ["ALL_ROUTES", "READ_ROUTES", "RouteFactory", "create_app"]
