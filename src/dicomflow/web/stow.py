"""STOW-RS (PS3.18 §10.5): ``POST /studies`` and ``POST /studies/{study}``, through the C-STORE ingest core.

A request is ``multipart/related; type="application/dicom"``: one Part 10
file per part. The body is spooled to disk part by part as it arrives
(:mod:`dicomflow.web.multipart`) under ``{storage.root}/.dicomweb/stow/``
(``{storage.spool}/.dicomweb/stow/`` on the ``s3`` backend),
never held in memory, and refused with 413 once it passes
``web.max_stow_bytes`` (at once when Content-Length says so). Then each part
goes, one at a time, through the store decision every way in shares
(:meth:`dicomflow.ingest.service.StoreService.store`, one call per part,
the very function the C-STORE receiver calls per C-STORE): the consumer's
validity rule and derived values (docs/architecture.md, "Derived values"),
the same UID rules, storage layout and atomic durable write, the same store
event and receipt, answered only once Kafka acknowledged them. So an
instance stored here is indistinguishable from one received by C-STORE,
and the consumer indexes it the same way.

The tenant is the authenticated token's tenant claim (an override of the
ingest core's tenant resolution): a tenant tag in the data set or any
request header is ignored. Storing needs the write scope.

The answer (PS3.18 §10.5.3) is DICOM JSON: ReferencedSOPSequence (0008,1199)
with each stored instance's RetrieveURL, FailedSOPSequence (0008,1198) with a
FailureReason (0008,1197) per refused part, and the study's RetrieveURL
when one study was stored. Status 200 when every part was stored, 202 when
some were, 409 when none. FailureReason codes are the C-STORE statuses the
receiver answers: 0xA700 (out of resources: disk or Kafka; retry), 0xA900
(data set does not match the SOP class: a required UID missing; also a
part whose Study Instance UID differs from the one in the URL), 0xC000
(cannot understand: not Part 10, a malformed UID, unreadable data, a part
that is not ``application/dicom``), 0x0111 (duplicate SOP instance: stored
already with other content, under ``ingest.duplicates = "reject"``). A
re-sent identical instance is a Success that changes nothing (unless the
first copy's store event was never acknowledged: then it is published
again); the duplicates policy is :mod:`dicomflow.ingest.duplicates`, as for
C-STORE.

Every request is audited as "DICOM Instances Transferred" (110104, action
C) per study and outcome, with the token's subject and the client address,
through ingest's transfer log (as a C-STORE association is).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.audit import events as audit
from dicomflow.dicom import reader
from dicomflow.dicom.constants import PREFIX, SOP_CLASS_UID, SOP_INSTANCE_UID
from dicomflow.dicom.exceptions import UnreadableDicom
from dicomflow.dicom.part10 import file_header, read_file_meta
from dicomflow.dicom.values import Values
from dicomflow.errors import ConfigError
from dicomflow.ingest.exceptions import CANNOT_UNDERSTAND
from dicomflow.ingest.ingestor import Ingestor, Source
from dicomflow.ingest.service import StoreRequest, StoreService
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.models import AuditEvent
from dicomflow.web.auth import Principal
from dicomflow.web.cache import FOLDER
from dicomflow.web.context import WebContext, base_url, check_uid, client_address
from dicomflow.web.multipart import MultipartError, MultipartSpooler, Part, boundary_of

log = logging.getLogger(__name__)

#: The Called AE of the audit trail: this server's DICOMweb side.
CALLED = "DICOMWEB"
_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class PartOutcome:
    """What became of one part: stored (status 0) or refused with a FailureReason."""

    status: int
    sop_class_uid: str | None
    sop_uid: str | None
    study_uid: str | None
    series_uid: str | None
    reason: str | None = None
    #: False when refused before the ingest core saw it (audited here, not by the core).
    via_core: bool = False


class Stower:
    """The store side of one server process: an ingest core per tenant, sharing one publisher."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self._services: dict[str, StoreService] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.transfers = TransferLog(ctx.settings.worker_node_id, self._emit)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the audit publisher runs on (the server's)."""
        self._loop = loop

    def _emit(self, events: Sequence[AuditEvent]) -> None:
        """Audit events from any thread, handed to the web's background audit publisher."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.ctx.audit, list(events))

    def service(self, tenant: str) -> StoreService:
        """The ingest core storing into ``tenant`` (the token's), built on first use.

        Raises:
            HTTPException: 503 without a Kafka publisher, 403 for a tenant that is no safe folder name.
        """
        found = self._services.get(tenant)
        if found is not None:
            return found
        if self.ctx.publisher is None:
            raise HTTPException(503, "this server has no Kafka publisher; it cannot store")
        s = self.ctx.settings
        try:
            ingestor = Ingestor(s.storage, s.ingest, s.worker_node_id, tenant_override=tenant)
        except ConfigError as exc:
            raise HTTPException(403, f"the token's tenant cannot be stored into: {exc}") from exc
        service = StoreService(ingestor, self.ctx.publisher, self.transfers,
                               publish_timeout_s=s.receiver.publish_timeout_s)
        self._services[tenant] = service
        return service

    def close(self) -> None:
        for service in self._services.values():
            service.close()
        self._services.clear()


def ingest_part(service: StoreService, session: SessionKey, part: Part, source: Source,
                study: str | None) -> PartOutcome:
    """Read one spooled part and pass it to the shared store decision (blocking: waits for Kafka).

    Only what makes a part a Part 10 file is checked here (its media type,
    the DICM prefix, the file meta information that names its transfer
    syntax); everything about the data set is
    :meth:`~dicomflow.ingest.service.StoreService.store`'s, as for a C-STORE.
    """
    media = part.content_type.split(";", 1)[0].strip().lower()
    if media not in ("application/dicom", ""):
        return PartOutcome(CANNOT_UNDERSTAND, None, None, None, None, f"part of type {media!r}, not application/dicom")
    data = part.path.read_bytes()
    if len(data) < 132 or data[128:132] != PREFIX:
        return PartOutcome(CANNOT_UNDERSTAND, None, None, None, None, "not a DICOM Part 10 file (no DICM prefix)")
    try:
        meta, offset = read_file_meta(data, 132)
    except ValueError as exc:
        return PartOutcome(CANNOT_UNDERSTAND, None, None, None, None, f"unreadable file meta information: {exc}")
    outcome = service.store(session, StoreRequest(
        dataset=data[offset:], transfer_syntax_uid=meta.transfer_syntax_uid,
        sop_class_uid=meta.media_storage_sop_class_uid, sop_instance_uid=meta.media_storage_sop_instance_uid,
        source=source, study_uid=study,
    ))
    h = outcome.header
    if h is not None:
        return PartOutcome(outcome.status, h.sop_class_uid, h.sop_instance_uid, h.study_uid, h.series_uid,
                           outcome.comment, via_core=True)
    # Refused before its UIDs were derived (one missing or malformed): name it by what its data set says,
    # as the client knows it, else by its file meta information.
    sop_class, sop_uid = _dataset_sop_uids(data, offset, meta.transfer_syntax_uid)
    return PartOutcome(outcome.status, sop_class or meta.media_storage_sop_class_uid,
                       sop_uid or meta.media_storage_sop_instance_uid, None, None, outcome.comment, via_core=True)


def _dataset_sop_uids(data: bytes, offset: int, transfer_syntax_uid: str) -> tuple[str | None, str | None]:
    """SOP Class and SOP Instance UID as the data set holds them (unvalidated: for the response only)."""
    try:
        raw = reader.read_dataset(data, transfer_syntax_uid, offset=offset,
                                  wanted=frozenset({SOP_CLASS_UID, SOP_INSTANCE_UID}),
                                  file_prefix=lambda: file_header("1.2", "1.2", transfer_syntax_uid))
    except UnreadableDicom:
        return None, None
    values = Values(raw, "STOW-RS part")
    return values.uid(SOP_CLASS_UID), values.uid(SOP_INSTANCE_UID)


async def _spool(ctx: WebContext, request: Request, folder: Path) -> list[Part]:
    """Read the body into part files, enforcing ``web.max_stow_bytes`` (413)."""
    content_type = request.headers.get("content-type", "")
    main = content_type.split(";", 1)[0].strip().lower()
    inner = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "type":
            inner = value.strip().strip('"').lower()
    if main != "multipart/related" or inner not in ("application/dicom", ""):
        raise HTTPException(415, 'STOW-RS takes multipart/related; type="application/dicom"')
    limit = ctx.settings.web.max_stow_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the body ({declared} bytes) exceeds web.max_stow_bytes ({limit})")
    try:
        spooler = MultipartSpooler(boundary_of(content_type), folder)
    except MultipartError as exc:
        raise HTTPException(400, str(exc)) from exc
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise HTTPException(413, f"the body exceeds web.max_stow_bytes ({limit})")
            spooler.feed(chunk)
    except MultipartError as exc:
        raise HTTPException(400, f"malformed multipart body: {exc}") from exc
    except ClientDisconnect as exc:
        raise HTTPException(400, "the client disconnected before the body ended") from exc
    finally:
        spooler.close()
    if not spooler.complete:
        raise HTTPException(400, "malformed multipart body: no closing boundary delimiter")
    if not spooler.parts:
        raise HTTPException(400, "the multipart body has no parts")
    return spooler.parts


def _ui(value: str | None) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def response_document(outcomes: Sequence[PartOutcome], base: str) -> dict[str, Any]:
    """The PS3.18 Store Instances Response Module as DICOM JSON."""
    doc: dict[str, Any] = {}
    stored = [o for o in outcomes if o.status == 0]
    failed = [o for o in outcomes if o.status != 0]
    studies = {o.study_uid for o in stored}
    if len(studies) == 1:
        doc["00081190"] = {"vr": "UR", "Value": [f"{base}/studies/{next(iter(studies))}"]}
    if failed:
        doc["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_uid), "00081197": {"vr": "US", "Value": [o.status]}}
            for o in failed
        ]}
    if stored:
        doc["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_uid), "00081190": {"vr": "UR", "Value": [
                f"{base}/studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"]}}
            for o in stored
        ]}
    return doc


async def store(ctx: WebContext, stower: Stower, request: Request) -> Response:
    """POST /studies[/{study}]: store every part; answer the Store Instances Response."""
    principal: Principal = await ctx.principal(request, "write")
    study = check_uid(request.path_params["study"], "StudyInstanceUID") if "study" in request.path_params else None
    service = stower.service(principal.tenant)
    stower.bind(asyncio.get_running_loop())
    storage = ctx.settings.storage
    spool = storage.spool if storage.backend == "s3" else ctx.storage_root  # S3: the root holds caches only
    folder = spool / FOLDER / "stow" / uuid.uuid4().hex
    await run_in_threadpool(folder.mkdir, parents=True, exist_ok=False)
    session = SessionKey("stow-rs")  # this request in the transfer log (one audit event per study)
    address = client_address(request) or ""
    stower.transfers.opened(session, Peer(principal.user, address or None, CALLED, None))
    outcomes: list[PartOutcome] = []
    try:
        parts = await _spool(ctx, request, folder)
        source = Source(ae_title=principal.user, address=address)
        for part in parts:
            outcome = await run_in_threadpool(ingest_part, service, session, part, source, study)
            if outcome.status != 0 and not outcome.via_core:  # the core logs and audits its own refusals
                log.warning("STOW-RS part %d from %s refused with 0x%04X: %s", len(outcomes) + 1, principal.user,
                            outcome.status, outcome.reason)
                stower.transfers.failed(session, tenant=principal.tenant, study_uid=outcome.study_uid,
                                        outcome=audit.MINOR_FAILURE, reason=outcome.reason or "refused",
                                        sop_class_uid=outcome.sop_class_uid)
            outcomes.append(outcome)
    finally:
        stower.transfers.closed(session)
        await run_in_threadpool(shutil.rmtree, folder, True)
    stored = sum(o.status == 0 for o in outcomes)
    status = 200 if stored == len(outcomes) else 202 if stored else 409
    body = _json.encode(response_document(outcomes, base_url(request)))
    return Response(body, status_code=status, media_type="application/dicom+json")


def routes(ctx: WebContext) -> list[BaseRoute]:
    """The STOW-RS routes (mounted beside the read side's)."""
    stower = Stower(ctx)

    async def handle(request: Request) -> Response:
        return await store(ctx, stower, request)

    return [Route("/studies", handle, methods=["POST"]), Route("/studies/{study}", handle, methods=["POST"])]


__all__ = ["PartOutcome", "Stower", "ingest_part", "response_document", "routes"]
