"""DELETE of a study, a series or an instance, as Azure's DICOM service: ``DELETE /studies/{study}[/series/{s}[/instances/{i}]]``.

Needs the write scope; acts in the caller's tenant only (the token's
tenant claim, as STOW-RS): what does not exist *in that tenant* is 404,
whatever other tenants hold. The index rows go, with the change log's
``delete`` rows and the purge queue's entries, in one transaction
(:mod:`dicomflow.store.deletes`); once it commits QIDO-RS and WADO-RS (which
answer from those rows) no longer return the data, and the metadata cache
is never consulted for an instance the index does not list. The objects go
later, by ``dicomflow purge``. Answers 204; 503 with ``Retry-After`` while
PostgreSQL is unavailable (nothing was deleted). Every delete is audited
(110103, action D) with the token's subject and the client's address.
"""

from __future__ import annotations

import logging

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.audit.lifecycle import instances_deleted
from dicomflow.errors import StoreError
from dicomflow.store import DeleteResult, DeleteTarget, PgStore
from dicomflow.web.context import RETRY_AFTER_S, WebContext, check_uid, client_address

log = logging.getLogger(__name__)


def _delete(ctx: WebContext, target: DeleteTarget) -> DeleteResult:
    """One delete on its own connection: deletes are rare, and a connection held by the route would outlive the app."""
    with PgStore(ctx.settings.database) as store:
        return store.delete(target, purge_delay_s=ctx.settings.lifecycle.purge_delay_s)


async def delete(ctx: WebContext, request: Request) -> Response:
    """Delete what the path names in the caller's tenant: 204, or 404 when it holds nothing of it."""
    principal = await ctx.principal(request, "write")
    p = request.path_params
    study = check_uid(p["study"], "StudyInstanceUID")
    series = check_uid(p["series"], "SeriesInstanceUID") if "series" in p else None
    sop = check_uid(p["instance"], "SOPInstanceUID") if "instance" in p else None
    target = DeleteTarget(principal.tenant, study, series, sop)
    try:
        result = await run_in_threadpool(_delete, ctx, target)
    except StoreError as exc:
        log.warning("DELETE %s: the index is unavailable: %s", request.url.path, exc)
        raise HTTPException(503, "the index is unavailable; retry later",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
    if not result.found:
        raise HTTPException(404, f"no such {target.level}")
    log.info("%s deleted %s %s (%d instances)", principal.user, target.level, sop or series or study,
             len(result.instances))
    ctx.audit([instances_deleted(
        node_id=ctx.settings.worker_node_id, tenant_id=principal.tenant, study_uid=study,
        instance_count=len(result.instances), user=principal.user, user_address=client_address(request),
        resource=request.url.path,
    )])
    return Response(status_code=204)


def routes(ctx: WebContext) -> list[BaseRoute]:
    """The three DELETE routes."""

    async def handle(request: Request) -> Response:
        return await delete(ctx, request)

    return [
        Route("/studies/{study}", handle, methods=["DELETE"]),
        Route("/studies/{study}/series/{series}", handle, methods=["DELETE"]),
        Route("/studies/{study}/series/{series}/instances/{instance}", handle, methods=["DELETE"]),
    ]


__all__ = ["delete", "routes"]
