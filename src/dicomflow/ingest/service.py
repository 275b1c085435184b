"""The store decision for one instance, whatever way it came in: validate, write, publish, answer.

:class:`StoreService` is called once per instance — by the C-STORE
receiver's association engines (per C-STORE, whole or streamed through
the receiver's ``Reception``) and by STOW-RS (per part), each naming its
session (:class:`~dicomflow.ingest.transfer_log.SessionKey`: an
association, a request) for the audit trail — and returns the status to
answer: the same validity rule (:meth:`Ingestor.read <dicomflow.ingest.ingestor.Ingestor.read>`, the
consumer's own reader), the same derived values, storage layout, duplicates
policy (:mod:`~dicomflow.ingest.duplicates`) and durable write, and the
same store event and receipt, acknowledged by Kafka before Success. It
never raises: every problem becomes a failure status with an Error Comment,
and is logged and counted for the audit trail
(:class:`~dicomflow.ingest.transfer_log.TransferLog`).
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dicomflow.audit import events as audit
from dicomflow.dicom.derived import InstanceHeader
from dicomflow.dicom.part10 import Buffer
from dicomflow.errors import PublishError
from dicomflow.ingest.duplicates import DuplicateInstanceError, Placement, place
from dicomflow.ingest.exceptions import (
    DATASET_MISMATCH,
    OUT_OF_RESOURCES,
    IngestError,
    InternalError,
    PublishFailedError,
)
from dicomflow.ingest.ingestor import Identity, Ingestor, Source
from dicomflow.ingest.journal import Journal
from dicomflow.ingest.placement_s3 import S3Placement, SpoolFile, Upload
from dicomflow.ingest.storage import PendingFile, sync_folder_durably
from dicomflow.ingest.transfer_log import SessionKey, TransferLog
from dicomflow.ingest.uids import is_valid_uid
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta

log = logging.getLogger(__name__)

SUCCESS = 0x0000
#: Error Comment is an LO: at most 64 characters, no backslash, no control characters.
COMMENT_MAX = 64


@dataclass(frozen=True)
class StoreRequest:
    """One instance as received: the encoded data set and what the request said about it."""

    dataset: bytes
    transfer_syntax_uid: str
    sop_class_uid: str | None
    sop_instance_uid: str | None
    source: Source
    #: The study the request is for (STOW-RS ``POST /studies/{study}``): a data set of
    #: another study is refused with 0xA900.
    study_uid: str | None = None


@dataclass(frozen=True)
class StoreOutcome:
    """The status to answer, the Error Comment for a failure, and what was read of the instance."""

    status: int
    comment: str | None = None
    #: The derived header, when the data set could be read (also for some refusals).
    header: InstanceHeader | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


def error_comment(text: str) -> str:
    """``text`` made a valid LO value: printable ASCII without backslash, at most 64 characters."""
    clean = "".join(c if " " <= c <= "~" and c != "\\" else "?" for c in text)
    return clean[:COMMENT_MAX].rstrip()


class StoreMetrics(Protocol):
    """What the store decision reports to an observer (the receiver's Prometheus metrics)."""

    def stored(self, size: int, *, write_s: float, fsync_s: float, ack_s: float) -> None: ...

    def refused(self, status: int) -> None: ...


class StageRecorder(Protocol):
    """Per-instance stage times, by the thread handling the instance (metrics/stages.py; benchmarks only)."""

    def add(self, stage: str, ns: int) -> None: ...

    def named_ns(self) -> int: ...

    def finish(self) -> None: ...

    def drop(self) -> None: ...


class StudyMismatchError(IngestError):
    """The data set belongs to another study than the one the request is for."""

    status = DATASET_MISMATCH


class StoreService:
    """Validates, writes and publishes one instance per call. Dependencies passed in.

    Shared by every association thread of the process; it keeps no
    per-request state of its own.
    """

    def __init__(self, ingestor: Ingestor, publisher: Publisher, transfers: TransferLog, *, publish_timeout_s: float,
                 metrics: StoreMetrics | None = None, stages: StageRecorder | None = None,
                 journal: Journal | None = None) -> None:
        self.ingestor = ingestor
        #: ``receiver.ack = "journal"``: Success once the journal record is durable (None: once Kafka acknowledged).
        self.journal = journal
        #: Observer: counts and latencies (never changes a decision).
        self.metrics = metrics
        #: Observer: per-stage times of each instance (benchmarks; None: off).
        self.stages = stages
        self.publisher = publisher
        self.transfers = transfers
        self.publish_timeout_s = publish_timeout_s
        #: Runs each new file's folder fsync while Kafka acknowledges its event.
        self._folder_syncs = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicomflow-fsync")

    def close(self) -> None:
        """Release the folder-sync threads and the ingestor's background requests (after the last store)."""
        self._folder_syncs.shutdown(wait=True)
        if self.journal is not None:
            self.journal.close(self.publish_timeout_s)
        self.ingestor.close()

    def store(self, session: SessionKey, request: StoreRequest) -> StoreOutcome:
        """Handle one instance whose data set is in memory (a C-STORE, a STOW-RS part); return its status. Never raises."""
        return self.store_bytes(session, request.dataset, request.transfer_syntax_uid, request.sop_class_uid,
                                request.sop_instance_uid, request.source, study_uid=request.study_uid)

    def store_bytes(self, session: SessionKey, dataset: Buffer, syntax: str, sop_class_uid: str | None,
                    sop_instance_uid: str | None, source: Source, *, study_uid: str | None = None) -> StoreOutcome:
        """Read, identify, write and publish a data set held whole in memory. Never raises.

        With ``study_uid``, a data set of another study is refused (0xA900).
        """
        header: InstanceHeader | None = None
        identity: Identity | None = None
        stages = self.stages
        try:
            parse_started = time.perf_counter_ns()
            header = self.ingestor.read(dataset, syntax)
            if study_uid is not None and header.study_uid != study_uid:
                raise StudyMismatchError(f"Study Instance UID {header.study_uid} is not the requested study {study_uid}",
                                         sop_uid=header.sop_instance_uid)
            identity = self.ingestor.identify(
                header, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid, calling_ae=source.ae_title,
            )
            if stages is not None:
                stages.add("parse", time.perf_counter_ns() - parse_started)
            started = time.perf_counter()
            if self.ingestor.s3 is not None:  # in memory already: straight up, no spool file
                upload: PendingFile | Upload = self.ingestor.open_upload(identity, dataset, syntax, source)
            else:
                upload = self.ingestor.open_file(identity, syntax, source)
                upload.write(dataset)
            write_s = time.perf_counter() - started
            if stages is not None:
                stages.add("write", int(write_s * 1e9))
        except IngestError as exc:
            return self.refuse(session, exc, header, identity, source)
        except Exception as exc:  # noqa: BLE001 - a handler answers a status, it never raises
            return self.internal_error(session, exc, header, identity, source)
        return self.complete(session, identity, upload, syntax, source, write_s=write_s)

    def _place(self, pending: PendingFile | Upload, sop_uid: str) -> tuple[Placement | S3Placement, Path | str]:
        """Put a sealed file (or an upload) in place: a file under the root, or an object on S3; and its location.

        Raises:
            DuplicateInstanceError, StorageWriteError: as :func:`~dicomflow.ingest.duplicates.place`.
        """
        if isinstance(pending, (SpoolFile, Upload)):
            assert self.ingestor.s3 is not None
            try:
                s3_placement = self.ingestor.s3.place(pending, sop_uid=sop_uid)
            finally:
                pending.discard()  # the spool file: up in S3 or refused, it is needed no more
            return s3_placement, s3_placement.location
        return place(pending.temp, pending.path, self.ingestor.duplicates, sop_uid=sop_uid), pending.path

    def complete(self, session: SessionKey, identity: Identity, pending: PendingFile | Upload, syntax: str,
                 source: Source, *, write_s: float = 0.0) -> StoreOutcome:
        """Sync and place a fully written file (or upload), publish its store event, answer. Never raises."""
        placement: Placement | S3Placement | None = None
        try:
            started = time.perf_counter()
            # The journal's group commit syncs the file with the others of its group: not one fdatasync each.
            covered = False
            if self.journal is not None and type(pending) is PendingFile and self.journal.covers(pending.path.parent):
                covered = True
                size = pending.seal(sync=False)
            else:
                size = pending.seal()
            sealed = time.perf_counter()
            placement, location = self._place(pending, identity.sop_uid)
            synced = time.perf_counter()
            if placement.duplicate:
                self._audit_duplicate(session, identity, placement, size, source)
            if not placement.publish:  # identical, or kept: Success, nothing changes
                self.transfers.stored(
                    session, tenant=identity.tenant, study_uid=identity.study_uid,
                    sop_class_uid=identity.sop_class_uid, patient_id=identity.header.patient_id or None,
                )
                log.info("%s from %s: SOP Instance UID stored already (%s); nothing published",
                         identity.sop_uid, source.ae_title, placement.outcome)
                return StoreOutcome(SUCCESS, header=identity.header)
            store_event = self.ingestor.store_event(identity, location, placement.size, syntax, source)
            evented = time.perf_counter()
            try:
                folder = location.parent if isinstance(location, Path) else None
                if self.journal is not None:
                    self._journal(store_event, folder, covered=covered)
                else:
                    self._publish_and_sync(store_event, folder)
            except BaseException:
                placement.not_acknowledged()
                raise
            published = time.perf_counter()
            self._acknowledged(placement)
            acked = time.perf_counter()
        except DuplicateInstanceError as exc:
            pending.discard()
            self._audit_duplicate(session, identity, None, pending.size, source)
            return self.refuse(session, exc, identity.header, identity, source)
        except IngestError as exc:
            pending.discard()
            return self.refuse(session, exc, identity.header, identity, source)
        except Exception as exc:  # noqa: BLE001 - a handler answers a status, it never raises
            pending.discard()
            return self.internal_error(session, exc, identity.header, identity, source)
        self.transfers.stored(
            session, tenant=identity.tenant, study_uid=identity.study_uid,
            sop_class_uid=identity.sop_class_uid, patient_id=identity.header.patient_id or None,
        )
        if self.metrics is not None:
            self.metrics.stored(size, write_s=write_s, fsync_s=synced - started, ack_s=acked - synced)
        if self.stages is not None:
            self._time_stages(self.stages, (started, sealed, synced, evented, published, acked))
        log.debug("stored %s from %s as %s", identity.sop_uid, source.ae_title, store_event.file_path)
        return StoreOutcome(SUCCESS, header=identity.header)

    def _acknowledged(self, placement: Placement | S3Placement) -> None:
        """The event is durable: drop the mark and backup, with the journal on its tidy thread (no wait for it)."""
        if self.journal is not None:
            self.journal.tidy(placement.acknowledged)
        else:
            placement.acknowledged()

    @staticmethod
    def _time_stages(stages: StageRecorder, marks: tuple[float, float, float, float, float, float]) -> None:
        """The stages of :meth:`complete` (its perf_counter marks) in nanoseconds; ack and folder sync are in already."""
        started, sealed, placed, evented, published, acked = marks
        stages.add("file_sync", int((sealed - started) * 1e9))
        stages.add("place", int((placed - sealed) * 1e9))
        stages.add("event", int((evented - placed) * 1e9))
        stages.add("unmark", int((acked - published) * 1e9))  # the .unacknowledged mark removed
        stages.add("bookkeeping", int((time.perf_counter() - acked) * 1e9))

    def _audit_duplicate(self, session: SessionKey, identity: Identity, placement: Placement | S3Placement | None,
                         received_size: int, source: Source) -> None:
        """One audit event per non-identical duplicate (``placement`` None: rejected)."""
        decision = placement.outcome if placement is not None else "rejected"
        log.warning("%s from %s (%s): SOP Instance UID stored already with other content; %s",
                    identity.sop_uid, source.ae_title, source.address, decision)
        peer = self.transfers.peer_of(session)
        self.transfers.emit([audit.duplicate_instance(
            node_id=self.ingestor.node_id, tenant_id=identity.tenant, study_uid=identity.study_uid,
            sop_uid=identity.sop_uid, sop_class_uid=identity.sop_class_uid, decision=decision,
            file_path=self.ingestor.location_of(identity),
            stored_size=placement.previous_size if placement is not None else None, received_size=received_size,
            source_ae=source.ae_title, source_address=source.address, source_user=peer.user if peer else None,
            destination_ae=peer.called_ae if peer else None,
        )])

    def internal_error(self, session: SessionKey, exc: Exception, header: InstanceHeader | None,
                       identity: Identity | None, source: Source) -> StoreOutcome:
        """An unexpected failure: logged with its traceback, answered as out of resources."""
        log.error("unexpected error storing an instance from %s (%s)", source.ae_title, source.address, exc_info=exc)
        return self.refuse(session, InternalError(f"internal error: {type(exc).__name__}"), header, identity,
                           source)

    def _publish_and_sync(self, store_event: DicomStoreMeta, folder: Path | None) -> None:
        """Publish the event while the folder holding the new name is synced; both before Success.

        The file's data is on disk and its name visible already, so the
        consumer can read it as soon as the event arrives; the two waits
        overlap instead of adding up.

        ``folder`` None: an object on S3, durable already (S3 acknowledged its PUT).

        Raises:
            PublishFailedError: Kafka did not acknowledge (reported first).
            StorageWriteError: the folder could not be synced.
        """
        stages = self.stages
        if folder is None or not self.ingestor.fsync:
            started = time.perf_counter_ns()
            self._publish(store_event)
            if stages is not None:
                stages.add("ack", time.perf_counter_ns() - started)
            return
        synced = self._folder_syncs.submit(_sync_folder_timed, folder)
        started = time.perf_counter_ns()
        try:
            self._publish(store_event)
        finally:
            acked = time.perf_counter_ns()
            error = synced.exception()
        if error is not None:
            raise error
        if stages is not None:
            stages.add("ack", acked - started)
            stages.add("folder_wait", time.perf_counter_ns() - acked)
            stages.add("folder_sync", synced.result())

    def _journal(self, store_event: DicomStoreMeta, folder: Path | None, *, covered: bool) -> None:
        """Record the event in the journal, its folder (``covered``: and file) synced in the same group commit.

        Both before Success.

        Raises:
            JournalWriteError, JournalFullError: not durable (out of resources: the sender retries).
        """
        assert self.journal is not None
        stages = self.stages
        started = time.perf_counter_ns()
        times = self.journal.commit(store_event, folder, covered=covered)
        if stages is not None:
            stages.add("journal", time.perf_counter_ns() - started)
            stages.add("journal_sync", times.journal_sync_ns)
            stages.add("folder_sync", times.folder_sync_ns)
            stages.add("group", times.group)

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

    def refuse(
        self, session: SessionKey, exc: IngestError, header: InstanceHeader | None, identity: Identity | None,
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
            session, tenant=tenant, study_uid=study if study and is_valid_uid(study) else None,
            outcome=audit.SERIOUS_FAILURE if transient else audit.MINOR_FAILURE, reason=str(exc),
            sop_class_uid=identity.sop_class_uid if identity else None,
        )
        if self.metrics is not None:
            self.metrics.refused(exc.status)
        return StoreOutcome(exc.status, error_comment(exc.reason), header=header)


def _sync_folder_timed(folder: Path) -> int:
    """:func:`sync_folder_durably` on a folder-sync thread; the nanoseconds it took."""
    started = time.perf_counter_ns()
    sync_folder_durably(folder)
    return time.perf_counter_ns() - started


__all__ = ["COMMENT_MAX", "SUCCESS", "StageRecorder", "StoreMetrics", "StoreOutcome", "StoreRequest", "StoreService", "StudyMismatchError",
           "error_comment"]
