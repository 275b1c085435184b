"""``dicomflow publish``: store events for folders of DICOM files.

For each DICOM file found (by content, see :mod:`~dicomflow.scanner.walk`):
read the few header attributes, validate the UIDs, resolve the tenant,
then either

- with ``copy_into_storage``: copy it into the storage layout
  (``{root}/{tenant}/{YYYYMMDD}/{study}/{series}/{sop}.dcm``, atomically and
  durably, exactly as the receiver writes; a raw data set gets a preamble
  and meta information), or
- without: publish the file where it is. The consumer only accepts files
  under the storage root, so files elsewhere are counted and the summary
  says so loudly.

Store events go out in batches; each batch waits for Kafka's
acknowledgements, and every message Kafka refused is a failed file. Files
that are not DICOM or cannot be used (malformed, a UID missing or invalid)
are skipped with their reason; nothing is dropped silently. One "DICOM
Instances Transferred" audit event is published per study.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.audit import events as audit
from dicomflow.dicom.constants import EXPLICIT_VR_LE
from dicomflow.dicom.part10 import file_header, read_file_meta
from dicomflow.errors import PublishError
from dicomflow.ingest.duplicates import DuplicateInstanceError, Placement, place
from dicomflow.ingest.exceptions import IngestError
from dicomflow.ingest.ingestor import Identity, Ingestor, Source
from dicomflow.ingest.storage import PendingFile, sync_folder_durably
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent, DicomStoreMeta
from dicomflow.scanner.walk import SNIFF_BYTES, sniff
from dicomflow.settings import Settings

log = logging.getLogger(__name__)

#: What the store events say about where a published file came from.
PUBLISH_SOURCE = Source(ae_title="PUBLISH", address="127.0.0.1")
#: Events per Kafka batch (each batch waits for its acknowledgements).
DEFAULT_BATCH = 500
#: Files read (and copied) at once: the waits on fsync overlap.
DEFAULT_THREADS = 4


@dataclass(frozen=True)
class Skipped:
    """A file that was not published, and why.

    ``failed`` tells a file that could not be handled (unreadable, the copy
    or Kafka failed: worth a retry) from one that is not usable (not DICOM,
    a UID missing or invalid: retrying cannot help).
    """

    path: Path
    reason: str
    failed: bool = False
    #: Audit events the run publishes for this file (a duplicate SOP Instance UID).
    audit: tuple[AuditEvent, ...] = ()


@dataclass(frozen=True)
class Prepared:
    """A file ready to publish: its store event, and where it was before a copy."""

    source: Path
    identity: Identity
    event: DicomStoreMeta
    inside_root: bool
    #: How a copy was placed (replace: the old copy is kept until the event is acknowledged).
    placement: Placement | None = None
    #: Audit events the run publishes for this file (a replaced duplicate).
    audit: tuple[AuditEvent, ...] = ()


@dataclass
class Summary:
    """The outcome of one run: every file found is in exactly one of the three lists."""

    published: list[Prepared] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    failed: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def outside_root(self) -> list[Prepared]:
        """Published files the consumer will refuse (not under the storage root)."""
        return [p for p in self.published if not p.inside_root]

    def skipped_reasons(self) -> Counter[str]:
        """Skip reasons with their counts (the reason's first clause, for grouping)."""
        return Counter(s.reason.split(":")[0] for s in self.skipped)

    @property
    def ok(self) -> bool:
        return not self.failed


class FolderPublisher:
    """Publishes store events for DICOM files found under some paths.

    ``publisher`` is borrowed (the caller closes it).

    Raises:
        ConfigError: (constructor) the tenant is not a valid tenant id.
    """

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        *,
        tenant: str | None = None,
        copy_into_storage: bool = False,
        batch_size: int = DEFAULT_BATCH,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.ingestor = Ingestor(settings.storage, settings.ingest, settings.worker_node_id, tenant_override=tenant)
        self.copy_into_storage = copy_into_storage
        self.batch_size = max(1, batch_size)
        self.threads = max(1, threads)
        self.timeout_s = settings.kafka.message_timeout_ms / 1000 + 5.0
        self._audit = TransferLog(settings.worker_node_id, self._emit_audit)

    # ------------------------------------------------------------------ running

    def run(self, files: Sequence[Path], *, on_file: Callable[[Path], None] | None = None) -> Summary:
        """Publish every DICOM file of ``files`` (see :func:`~dicomflow.scanner.walk.iter_files`).

        ``on_file`` is called once per file when it is done (for a progress bar).
        """
        started = time.monotonic()
        summary = Summary()
        run_key = SessionKey("publish")
        self._audit.opened(run_key, Peer("PUBLISH", None, self.settings.receiver.ae_title, None))
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="dicomflow-publish") as pool:
            for start in range(0, len(files), self.batch_size):
                chunk = files[start:start + self.batch_size]
                ready: list[Prepared] = []
                events: list[AuditEvent] = []
                for path, outcome in zip(chunk, pool.map(self.prepare, chunk), strict=True):
                    events.extend(outcome.audit)
                    if isinstance(outcome, Prepared):
                        ready.append(outcome)
                    else:
                        (summary.failed if outcome.failed else summary.skipped).append(outcome)
                        if on_file:
                            on_file(path)
                self._send(ready, summary, run_key)
                if events:
                    self._emit_audit(events)
                if on_file:
                    for prepared in ready:
                        on_file(prepared.source)
        self._audit.closed(run_key)
        summary.seconds = time.monotonic() - started
        return summary

    def prepare(self, path: Path) -> Prepared | Skipped:
        """Read, validate and (with copy_into_storage) copy one file; never raises, never publishes.

        A duplicate's audit event comes back with the outcome; :meth:`run` publishes it.
        """
        try:
            return self._prepare(path)
        except IngestError as exc:
            return Skipped(path, exc.reason, failed=not exc.poison)
        except OSError as exc:
            return Skipped(path, f"cannot read: {exc.strerror or exc}", failed=True)
        except Exception as exc:  # one odd file must not stop the run
            log.exception("unexpected error reading %s", path)
            return Skipped(path, f"unexpected error: {type(exc).__name__}: {exc}", failed=True)

    def _prepare(self, path: Path) -> Prepared | Skipped:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SNIFF_BYTES)
            sniffed = sniff(head, size)
            if sniffed is None:
                return Skipped(path, "not DICOM: no DICM prefix and no data set start" if size else "not DICOM: empty file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return self._prepare_mapped(path, buf, size, sniffed.layout, sniffed.transfer_syntax_uid)

    def _prepare_mapped(
        self, path: Path, buf: mmap.mmap, size: int, layout: str, raw_syntax: str | None
    ) -> Prepared | Skipped:
        sop_class = sop_instance = None
        if layout == "raw":
            syntax, offset = raw_syntax or EXPLICIT_VR_LE, 0
        else:
            try:
                meta, offset = read_file_meta(buf, 132 if layout == "part10" else 0)
            except ValueError as exc:
                return Skipped(path, f"unusable file meta information: {exc}")
            syntax = meta.transfer_syntax_uid
            sop_class, sop_instance = meta.media_storage_sop_class_uid, meta.media_storage_sop_instance_uid
        if layout == "part10" or not self.copy_into_storage:  # the consumer reads this file, or a byte-for-byte copy
            header = self.ingestor.read_part10(buf, str(path))
        else:  # ... or this data set behind the preamble and meta the copy gets
            header = self.ingestor.read(buf, syntax, offset=offset, name=str(path))
        identity = self.ingestor.identify(header, sop_class_uid=sop_class, sop_instance_uid=sop_instance, calling_ae=None)
        placement: Placement | None = None
        audit_events: tuple[AuditEvent, ...] = ()
        if self.copy_into_storage:
            target = self.ingestor.path_of(identity)
            if target != path.resolve():
                pending = PendingFile(target, fsync=self.ingestor.fsync)
                try:
                    with memoryview(buf) as view:
                        if layout == "part10":
                            pending.write(view)
                        else:  # give a raw data set (or a meta group without preamble) a proper header
                            pending.write(file_header(identity.sop_class_uid, identity.sop_uid, syntax, None))
                            pending.write(view[offset:])
                    received = pending.seal()
                    placement = place(pending.temp, target, self.ingestor.duplicates, sop_uid=identity.sop_uid)
                except DuplicateInstanceError as exc:
                    return Skipped(path, f"{exc.reason}: {target}",
                                   audit=(self._audit_duplicate(identity, target, None, pending.size),))
                finally:
                    pending.discard()
                if self.ingestor.fsync:
                    sync_folder_durably(target.parent)
                if placement.duplicate:
                    audit_events = (self._audit_duplicate(identity, target, placement, received),)
                if not placement.publish:
                    what = "identical content" if placement.outcome == "identical" else (
                        "other content, the stored copy kept (ingest.duplicates = keep)")
                    return Skipped(path, f"already stored with {what}: {target}", audit=audit_events)
                size = placement.size
            inside = True
        else:
            target = path.resolve()
            inside = target.is_relative_to(self.ingestor.root)
        event = self.ingestor.store_event(identity, target, size, syntax, PUBLISH_SOURCE)
        return Prepared(path, identity, event, inside, placement, audit_events)

    def _audit_duplicate(
        self, identity: Identity, target: Path, placement: Placement | None, received: int
    ) -> AuditEvent:
        """The audit event of a non-identical duplicate (``placement`` None: rejected), logged here."""
        decision = placement.outcome if placement is not None else "rejected"
        log.warning("%s: SOP Instance UID %s stored already with other content; %s", target, identity.sop_uid, decision)
        return audit.duplicate_instance(
            node_id=self.settings.worker_node_id, tenant_id=identity.tenant, study_uid=identity.study_uid,
            sop_uid=identity.sop_uid, sop_class_uid=identity.sop_class_uid, decision=decision,
            file_path=str(target), stored_size=placement.previous_size if placement is not None else None,
            received_size=received, source_ae=PUBLISH_SOURCE.ae_title, source_address=PUBLISH_SOURCE.address,
            destination_ae=self.settings.receiver.ae_title,
        )

    def _send(self, ready: list[Prepared], summary: Summary, run_key: SessionKey) -> None:
        """Publish one batch; files whose events Kafka did not acknowledge are failures."""
        if not ready:
            return
        try:
            result = self.publisher.send_store_events([p.event for p in ready], timeout_s=self.timeout_s)
            failed = {f.index: f.reason for f in result.failures}
        except PublishError as exc:
            failed = {i: str(exc) for i in range(len(ready))}
        for index, prepared in enumerate(ready):
            identity = prepared.identity
            if prepared.placement is not None:
                if index in failed:
                    prepared.placement.not_acknowledged()
                else:
                    prepared.placement.acknowledged()
            if index in failed:
                summary.failed.append(Skipped(prepared.source, f"Kafka did not acknowledge: {failed[index]}", failed=True))
                self._audit.failed(run_key, tenant=identity.tenant, study_uid=identity.study_uid,
                                   outcome=audit.SERIOUS_FAILURE, reason=failed[index],
                                   sop_class_uid=identity.sop_class_uid)
            else:
                summary.published.append(prepared)
                self._audit.stored(run_key, tenant=identity.tenant, study_uid=identity.study_uid,
                                   sop_class_uid=identity.sop_class_uid,
                                   patient_id=identity.header.patient_id or None)

    def _emit_audit(self, events: Sequence[AuditEvent]) -> None:
        """Publish the run's audit events (observer: a failure is logged only)."""
        try:
            result = self.publisher.send_audit(events, timeout_s=self.timeout_s)
        except PublishError as exc:
            log.warning("could not publish %d audit event(s): %s", len(events), exc)
            return
        if not result.ok:
            log.warning("%d audit event(s) not acknowledged: %s", len(result.failures), result.failures[0].reason)


__all__ = ["DEFAULT_BATCH", "FolderPublisher", "Prepared", "Skipped", "Summary"]
