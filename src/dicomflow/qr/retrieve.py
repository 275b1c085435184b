"""What C-MOVE and C-GET share: the caller's tenant, the index lookup, one instance read at a time, the audit.

A :class:`Retriever` lives as long as the receiver. For one request it

1. resolves the caller's tenant (``ingest.ae_tenants`` for the calling AE
   title, else ``storage.default_tenant``: the same rule as C-STORE), so a
   caller never retrieves another tenant's instances;
2. looks the identifier's unique keys up in the index
   (:func:`dicomflow.store.retrieval.retrieve_instances`, on a connection
   opened for the request);
3. reads each instance through the storage layer (filesystem or S3) when it
   is about to be sent: as stored, a local file streamed by pynetdicom (an S3
   object spooled to a temporary file in chunks first); transcoded, one
   pydicom data set in memory at a time; never a study;
4. picks the transfer syntax the peer accepted for its SOP class: the stored
   one when accepted, else an uncompressed one, transcoded through
   :mod:`dicomflow.imaging.transcode`;
5. audits the transfer: Begin Transferring before the first sub-operation,
   DICOM Instances Transferred per study at the end, failures named.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydicom.dataset import Dataset

from dicomflow.audit import retrieve as audit
from dicomflow.audit.events import MINOR_FAILURE, SERIOUS_FAILURE, SUCCESS
from dicomflow.blobs import BlobError, BlobStore, open_store
from dicomflow.dicom.constants import EXPLICIT_VR_LE, IMPLICIT_VR_LE, NATIVE_SYNTAXES
from dicomflow.errors import ConfigError, DicomflowError
from dicomflow.imaging.transcode import WRITABLE, TranscodeError, read, transcode
from dicomflow.ingest.tenant import TenantResolver
from dicomflow.models import AuditEvent
from dicomflow.qr.retrieve_keys import Model, RetrieveRefused, retrieve_of
from dicomflow.settings import Settings
from dicomflow.settings.qr import parse_destination
from dicomflow.store.retrieval import RetrieveItem, retrieve_instances

log = logging.getLogger(__name__)

#: PS3.4 C.4.2.1.5 / C.4.3.1.5: Out of resources, unable to calculate the number of matches.
CANNOT_COUNT = 0xA701
#: Seconds to wait for PostgreSQL to accept the request's connection.
CONNECT_TIMEOUT_S = 10


class InstanceUnavailable(DicomflowError):
    """One instance cannot be sent (object missing or unreadable, no transfer syntax the peer takes)."""

    def __init__(self, sop_uid: str, reason: str) -> None:
        super().__init__(f"{sop_uid}: {reason}")
        self.sop_uid = sop_uid
        self.reason = reason


@dataclass
class Transfer:
    """One retrieve under way: what it sends and how each sub-operation ended (thread-safe tally)."""

    service: str
    tenant: str
    items: list[RetrieveItem]
    parties: audit.RetrieveParties
    completed: set[str] = field(default_factory=set)
    warned: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    cancelled: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def result(self, sop_uid: str, status: int | None, reason: str = "") -> None:
        """A C-STORE sub-operation's status (None: never sent, ``reason`` says why)."""
        with self._lock:
            if status == 0:
                self.completed.add(sop_uid)
            elif status is not None and (status & 0xF000) == 0xB000:
                self.warned.add(sop_uid)
            else:
                self.failed[sop_uid] = reason or f"C-STORE status 0x{status or 0:04X}"

    def on_store_response(self, event: Any) -> None:
        """EVT_DIMSE_RECV on the association carrying the sub-operations: record each C-STORE-RSP."""
        command = getattr(getattr(event, "message", None), "command_set", None)
        if command is None or int(getattr(command, "CommandField", 0) or 0) != 0x8001:
            return
        uid = str(getattr(command, "AffectedSOPInstanceUID", "") or "")
        if uid:
            self.result(uid, int(getattr(command, "Status", 0xC000)))


@dataclass(frozen=True)
class LocalCopy:
    """An instance to send as stored: a local file (the object itself, or an S3 object spooled for the send)."""

    local_path: str
    temporary: bool

    def cleanup(self) -> None:
        """Remove the file when it was spooled for the send (an S3 object)."""
        if self.temporary:
            with contextlib.suppress(OSError):
                os.unlink(self.local_path)


class StoredFile(Dataset):
    """A :class:`LocalCopy` as pynetdicom's handlers yield it: a data set with its UIDs (for the failure list)."""

    def __init__(self, item: RetrieveItem, copy: LocalCopy) -> None:
        super().__init__()
        self.SOPClassUID = item.sop_class_uid
        self.SOPInstanceUID = item.sop_uid
        self._dicomflow_copy = copy

    @property
    def local_path(self) -> str:
        return str(self._dicomflow_copy.local_path)

    def cleanup(self) -> None:
        self._dicomflow_copy.cleanup()


@dataclass(frozen=True)
class Transcoded:
    """An instance transcoded for the peer: a Part 10 file in ``transfer_syntax``, in memory."""

    transfer_syntax: str
    data: bytes


def choose_syntax(stored: str, accepted: Iterable[str]) -> str | None:
    """The syntax to send an instance stored in ``stored`` in: itself, else an uncompressed one, else any we write."""
    offered = list(accepted)
    if stored in offered:
        return stored
    for candidate in (EXPLICIT_VR_LE, IMPLICIT_VR_LE, *sorted(NATIVE_SYNTAXES), *WRITABLE):
        if candidate in offered:
            return candidate
    return None


class Retriever:
    """The receiver's retrieve service (see the module documentation); shared by every association.

    Raises:
        ConfigError: (constructor) a ``[qr.destinations]`` entry is not an AE title = ``host:port``.
    """

    def __init__(self, settings: Settings, tenants: TenantResolver,
                 emit_audit: Callable[[Sequence[AuditEvent]], None]) -> None:
        self.settings = settings
        self.tenants = tenants
        self._emit_audit = emit_audit
        self.store: BlobStore = open_store(settings.storage, fsync=settings.ingest.fsync)
        self.destinations = {ae.strip(): address for ae, address in settings.qr.destinations.items()}
        for ae, address in settings.qr.destinations.items():
            if parse_destination(address) is None or not 0 < len(ae.strip().encode()) <= 16:
                raise ConfigError(f"qr.destinations.{ae}", "settings",
                                  'must be an AE title of 1-16 characters = "host:port"')

    def destination(self, ae_title: str | None) -> tuple[str, int] | None:
        """The (host, port) of a Move Destination, None when it is not in ``[qr.destinations]``."""
        address = self.destinations.get((ae_title or "").strip())
        return None if address is None else parse_destination(address)

    def start(self, service: str, identifier: Dataset, model: Model, parties: audit.RetrieveParties) -> Transfer:
        """Look the identifier up for the caller's tenant.

        Raises:
            RetrieveRefused: the identifier is not a valid retrieve (0xA900) or the index is unreachable (0xA701).
        """
        wanted = retrieve_of(identifier, model)
        tenant = self.tenants.resolve(None, parties.requestor_ae)
        try:
            with psycopg.connect(self.settings.database.conninfo(), connect_timeout=CONNECT_TIMEOUT_S) as conn:
                items = retrieve_instances(conn, tenant, wanted.keys)
        except psycopg.Error as exc:
            log.warning("%s from %s: the index cannot be read: %s", service, parties.requestor_ae, exc)
            raise RetrieveRefused(CANNOT_COUNT, "the index is unavailable; retry later") from exc
        log.info("%s from %s: %d instance(s) at level %s for tenant %s", service, parties.requestor_ae, len(items),
                 wanted.level, tenant)
        return Transfer(service, tenant, items, parties)

    def begin(self, transfer: Transfer) -> None:
        """Audit Begin Transferring DICOM Instances."""
        studies = list(dict.fromkeys(i.study_uid for i in transfer.items))
        self._emit_audit([audit.begin_transferring(parties=transfer.parties, tenant_id=transfer.tenant,
                                                   service=transfer.service, study_uids=studies,
                                                   instance_count=len(transfer.items))])

    def load(self, item: RetrieveItem, accepted: Sequence[str]) -> Dataset:
        """The instance as a data set in a syntax the peer accepted for its SOP class (one instance in memory).

        Raises:
            InstanceUnavailable: the object is missing or unreadable, or no accepted syntax can be written.
        """
        found = self.fetch(item, accepted)
        if isinstance(found, LocalCopy):
            return StoredFile(item, found)
        try:
            return read(found.data)
        except (OSError, ValueError) as exc:
            raise InstanceUnavailable(item.sop_uid, f"cannot read the transcoded {item.file_path}: {exc}") from exc

    def fetch(self, item: RetrieveItem, accepted: Sequence[str]) -> LocalCopy | Transcoded:
        """The instance to send to a peer that accepted ``accepted`` for its SOP class (either network engine).

        As stored (its local file, an S3 object spooled first) when the
        stored syntax is accepted, else a Part 10 file in memory transcoded to
        one that is (:func:`choose_syntax`): one instance at a time.

        Raises:
            InstanceUnavailable: the object is missing or unreadable, or no accepted syntax can be written.
        """
        target = choose_syntax(item.transfer_syntax_uid, accepted)
        if target is None:
            raise InstanceUnavailable(item.sop_uid, f"the peer accepted no transfer syntax for {item.sop_class_uid}")
        try:
            key = self.store.key_of(item.file_path)
            if target == item.transfer_syntax_uid:
                return self._as_stored(key)
            source: Any = (self.store.location(key) if self.store.backend == "filesystem" else self.store.read(key))
            return Transcoded(target, transcode(source, target))
        except (BlobError, OSError, ValueError) as exc:
            raise InstanceUnavailable(item.sop_uid, f"cannot read {item.file_path}: {exc}") from exc
        except TranscodeError as exc:
            raise InstanceUnavailable(item.sop_uid, f"cannot transcode to {target}: {exc}") from exc

    def _as_stored(self, key: str) -> LocalCopy:
        """The object as a local file to stream: the file itself, or an S3 object spooled in chunks.

        Raises:
            BlobError, OSError: the object cannot be read.
        """
        if self.store.backend == "filesystem":
            path = self.store.location(key)
            if not os.path.isfile(path):
                raise OSError(f"{path} is missing")
            return LocalCopy(path, temporary=False)
        fd, spool = tempfile.mkstemp(prefix="dicomflow-retrieve-", suffix=".dcm")
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.store.stream(key):
                    out.write(chunk)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(spool)
            raise
        return LocalCopy(spool, temporary=True)

    def finish(self, transfer: Transfer) -> None:
        """Audit DICOM Instances Transferred, one event per study, the failed SOP Instance UIDs named."""
        by_study: dict[str, list[RetrieveItem]] = {}
        for item in transfer.items:
            by_study.setdefault(item.study_uid, []).append(item)
        events = []
        for study, items in by_study.items():
            sent = [i for i in items if i.sop_uid in transfer.completed or i.sop_uid in transfer.warned]
            failed = [i.sop_uid for i in items if i.sop_uid in transfer.failed]
            unsent = len(items) - len(sent) - len(failed)
            outcome = SUCCESS if not failed and not unsent else (SERIOUS_FAILURE if not sent else MINOR_FAILURE)
            description = None
            if failed or unsent:
                reasons = sorted({transfer.failed[uid] for uid in failed})
                description = (f"{len(failed)} failed, {unsent} not sent"
                               f"{' (cancelled)' if transfer.cancelled else ''}"
                               f"{': ' + '; '.join(reasons[:3]) if reasons else ''}")
            events.append(audit.instances_sent(
                parties=transfer.parties, tenant_id=transfer.tenant, service=transfer.service, study_uid=study,
                patient_id=items[0].patient_id, sent=len(sent), failed_uids=failed,
                sop_classes=[i.sop_class_uid for i in sent], outcome=outcome, outcome_description=description,
            ))
        if events:
            self._emit_audit(events)
        log.info("%s from %s to %s: %d sent, %d warning(s), %d failed, of %d%s", transfer.service,
                 transfer.parties.requestor_ae, transfer.parties.destination_ae, len(transfer.completed),
                 len(transfer.warned), len(transfer.failed), len(transfer.items),
                 " (cancelled)" if transfer.cancelled else "")


__all__ = ["CANNOT_COUNT", "InstanceUnavailable", "LocalCopy", "Retriever", "StoredFile", "Transcoded", "Transfer", "choose_syntax"]
