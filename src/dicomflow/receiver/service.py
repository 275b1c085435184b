"""The C-STORE decision, whatever speaks the network protocol: validate, write, publish, answer.

:class:`StoreService` is called by an association engine (the native
acceptor in :mod:`~dicomflow.receiver.acceptor` or pynetdicom in
:mod:`~dicomflow.receiver.pynetdicom_server`) once per C-STORE with a
:class:`StoreRequest`, and returns the status to answer. It never raises:
every problem becomes a failure status with an Error Comment, and is logged
and counted for the audit trail.

Engines report association life cycle to an :class:`AssociationEvents`
(the receiver), which keeps the audit tallies.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicomflow.audit import events as audit
from dicomflow.dicom.derived import InstanceHeader
from dicomflow.errors import PublishError
from dicomflow.ingest.exceptions import OUT_OF_RESOURCES, IngestError
from dicomflow.ingest.ingestor import Identity, Ingestor, Source
from dicomflow.ingest.storage import sync_folder_durably
from dicomflow.ingest.transfer_log import Peer, TransferLog
from dicomflow.ingest.uids import is_valid_uid
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta
from dicomflow.receiver.exceptions import InternalError, PublishFailedError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
#: Error Comment is an LO: at most 64 characters, no backslash, no control characters.
COMMENT_MAX = 64


@dataclass(frozen=True)
class StoreRequest:
    """One C-STORE as received: the encoded data set and what the request said about it."""

    dataset: bytes
    transfer_syntax_uid: str
    sop_class_uid: str | None
    sop_instance_uid: str | None
    source: Source


@dataclass(frozen=True)
class StoreOutcome:
    """The status to answer, and the Error Comment for a failure."""

    status: int
    comment: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


def error_comment(text: str) -> str:
    """``text`` made a valid LO value: printable ASCII without backslash, at most 64 characters."""
    clean = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return clean[:COMMENT_MAX].rstrip()


class AssociationEvents(Protocol):
    """What an engine tells the receiver about associations (for the audit trail and the dispatcher)."""

    def established(self, association: object, peer: Peer) -> None: ...

    def closed(self, association: object, peer: Peer | None) -> None: ...

    def rejected(self, peer: Peer, reason: str) -> None: ...


class StoreService:
    """Validates, writes and publishes one instance per call. Dependencies passed in.

    Shared by every association thread of the process; it keeps no
    per-request state of its own.
    """

    def __init__(self, ingestor: Ingestor, publisher: Publisher, transfers: TransferLog, *, publish_timeout_s: float) -> None:
        self.ingestor = ingestor
        self.publisher = publisher
        self.transfers = transfers
        self.publish_timeout_s = publish_timeout_s
        #: Runs each new file's folder fsync while Kafka acknowledges its event.
        self._folder_syncs = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomflow-fsync")

    def close(self) -> None:
        """Release the folder-sync threads (after the last store)."""
        self._folder_syncs.shutdown(wait=True)

    def store(self, association: object, request: StoreRequest) -> StoreOutcome:
        """Handle one C-STORE; return its status. Never raises."""
        source = request.source
        header: InstanceHeader | None = None
        identity: Identity | None = None
        try:
            syntax = request.transfer_syntax_uid
            header = self.ingestor.read(request.dataset, syntax)
            identity = self.ingestor.identify(
                header, sop_class_uid=request.sop_class_uid, sop_instance_uid=request.sop_instance_uid,
                calling_ae=source.ae_title,
            )
            path, size = self.ingestor.write(identity, request.dataset, syntax, source, defer_folder_sync=True)
            store_event = self.ingestor.store_event(identity, path, size, syntax, source)
            self._publish_and_sync(store_event, path.parent)
        except IngestError as exc:
            return self._refuse(association, exc, header, identity, source)
        except Exception as exc:  # a handler answers a status, it never raises
            log.exception("unexpected error storing an instance from %s (%s)", source.ae_title, source.address)
            return self._refuse(association, InternalError(f"internal error: {type(exc).__name__}"), header, identity, source)
        self.transfers.stored(
            association, tenant=identity.tenant, study_uid=identity.study_uid,
            sop_class_uid=identity.sop_class_uid, patient_id=identity.header.patient_id or None,
        )
        log.debug("stored %s from %s as %s", identity.sop_uid, source.ae_title, store_event.file_path)
        return StoreOutcome(SUCCESS)

    def _publish_and_sync(self, store_event: DicomStoreMeta, folder: Path) -> None:
        """Publish the event while the folder holding the new name is synced; both before Success.

        The file's data is on disk and its name visible already, so the
        consumer can read it as soon as the event arrives; the two waits
        overlap instead of adding up.

        Raises:
            PublishFailedError: Kafka did not acknowledge (reported first).
            StorageWriteError: the folder could not be synced.
        """
        if not self.ingestor.fsync:
            self._publish(store_event)
            return
        synced = self._folder_syncs.submit(sync_folder_durably, folder)
        try:
            self._publish(store_event)
        finally:
            error = synced.exception()
        if error is not None:
            raise error

    def _publish(self, store_event: DicomStoreMeta) -> None:
        """Send the store event and its receipt; return only once Kafka acknowledged both.

        Raises:
            PublishFailedError: not acknowledged within publish_timeout_s, or
                the publisher cannot send at all.
        """
        try:
            result = self.publisher.send_store_event(store_event, timeout_s=self.publish_timeout_s)
        except PublishError as exc:
            raise PublishFailedError(f"Kafka unavailable: {exc}", sop_uid=store_event.sop_uid) from exc
        if not result.ok:
            reason = result.failures[0].reason
            raise PublishFailedError(f"Kafka did not acknowledge the store event: {reason}", sop_uid=store_event.sop_uid)

    def _refuse(
        self, association: object, exc: IngestError, header: InstanceHeader | None, identity: Identity | None,
        source: Source,
    ) -> StoreOutcome:
        """Log, audit and answer a refused instance."""
        transient = exc.status == OUT_OF_RESOURCES
        log.log(
            logging.ERROR if transient else logging.WARNING,
            "refused an instance from %s (%s) with status 0x%04X: %s",
            source.ae_title, source.address, exc.status, exc,
        )
        study = identity.study_uid if identity else (header.study_uid if header else None)
        tenant = identity.tenant if identity else self.ingestor.tenants.default
        self.transfers.failed(
            association, tenant=tenant, study_uid=study if study and is_valid_uid(study) else None,
            outcome=audit.SERIOUS_FAILURE if transient else audit.MINOR_FAILURE, reason=str(exc),
            sop_class_uid=identity.sop_class_uid if identity else None,
        )
        return StoreOutcome(exc.status, error_comment(exc.reason))


__all__ = ["SUCCESS", "AssociationEvents", "StoreOutcome", "StoreRequest", "StoreService", "error_comment"]
