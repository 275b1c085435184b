"""What every WADO-RS resource does around reading a file: find the instances, pick the file, audit.

Shared by instance retrieval and metadata (:mod:`dicomflow.web.wado`), frames
and bulk data (:mod:`dicomflow.web.frames`) and rendered images
(:mod:`dicomflow.web.rendered`):

* :func:`lookup`: the indexed instances a request path names, in the
  caller's tenant, with every UID of the path checked first;
* :func:`served_file`: the object to send for an instance and its syntax
  (the image workers' copy of a ``NeedTransfer`` instance once it exists),
  located through the storage layer (:meth:`WebContext.locate`);
* :func:`audit_retrieval`: one audit event per study the answer touched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomflow.audit import dicomweb as dicomweb_audit
from dicomflow.blobs import BlobError
from dicomflow.store import queries
from dicomflow.store.queries import StoredInstance
from dicomflow.web.auth import Principal
from dicomflow.web.blobio import Blob
from dicomflow.web.context import WebContext, check_uid, client_address

log = logging.getLogger(__name__)


async def lookup(ctx: WebContext, principal: Principal, request: Request, *, level: str) -> list[StoredInstance]:
    """The indexed instances the path names, in the caller's tenant.

    Raises:
        HTTPException: 400 for a path segment that is not a UID, 404 when nothing matches.
    """
    p = request.path_params
    study = check_uid(p["study"], "StudyInstanceUID")
    series = check_uid(p["series"], "SeriesInstanceUID") if "series" in p else None
    sop = check_uid(p["instance"], "SOPInstanceUID") if "instance" in p else None
    async with ctx.db.connection() as conn:
        found = await queries.instances(conn, principal.tenant, study, series, sop)
    if not found:
        raise HTTPException(404, f"no such {level}")
    return found


def audit_retrieval(ctx: WebContext, principal: Principal, request: Request, items: Sequence[StoredInstance],
                    *, transferred: bool) -> None:
    """Queue one audit event per study of ``items``: instances retrieved (``transferred``) or accessed."""
    by_study: dict[str, list[StoredInstance]] = {}
    for item in items:
        by_study.setdefault(item.study_uid, []).append(item)
    node = ctx.settings.worker_node_id
    events = []
    for study, group in by_study.items():
        common = {"node_id": node, "tenant_id": principal.tenant, "study_uid": study, "instance_count": len(group),
                  "user": principal.user, "user_address": client_address(request), "resource": request.url.path,
                  "patient_id": group[0].patient_id}
        if transferred:
            events.append(dicomweb_audit.instances_retrieved(sop_classes=[g.sop_class_uid for g in group], **common))  # type: ignore[arg-type]
        else:
            events.append(dicomweb_audit.instances_accessed(**common))  # type: ignore[arg-type]
    ctx.audit(events)


async def served_file(ctx: WebContext, item: StoredInstance) -> tuple[Blob, str]:
    """The object to send and its syntax: the image workers' copy for a NeedTransfer instance, if present.

    ``dicomflow images`` sets the receipt to ``Success`` once the copy exists;
    until then the consumer's ``pixel_data_location`` is the original's
    location. On ``s3`` the copy's presence costs one HEAD (the original's
    is learnt from its read).

    Raises:
        HTTPException: from :meth:`WebContext.locate` for the original (404 missing, 500 outside the store).
    """
    copy = item.pixel_data_location
    if item.transfer_status in ("NeedTransfer", "Success") and copy and has_copy(item):
        try:
            blob = ctx.locate(copy)
            if blob.path is not None or await run_in_threadpool(ctx.store.exists, blob.key):
                return blob, item.target_ts
            log.warning("served copy %s of %s is missing; using the original", copy, item.sop_uid)
        except (HTTPException, BlobError):
            log.warning("served copy %s of %s unusable; using the original", copy, item.sop_uid)
    return ctx.locate(item.file_path), item.transfer_syntax_uid


def has_copy(item: StoredInstance) -> bool:
    """True when the image workers made a served copy (not the consumer's pointer to the original)."""
    return bool(item.pixel_data_location) and item.pixel_data_location != item.file_path


__all__ = ["audit_retrieval", "has_copy", "lookup", "served_file"]
