"""``dicomflow publish``: store events for folders of DICOM files.

For each file found (see :mod:`~dicomflow.scanner.walk`): decide up front
whether the consumer could index it (:mod:`~dicomflow.scanner.decide`), read
the few header attributes the way the consumer reads them, validate the
UIDs, resolve the tenant, then

- by default (``copy_into_storage``), copy a file from outside the storage
  root into the storage layout (``{root}/{tenant}/{YYYYMMDD}/{study}/{series}/{sop}.dcm``,
  atomically and durably, exactly as the receiver writes; a raw data set
  gets a preamble and meta information, duplicates follow
  ``ingest.duplicates``); a Part 10 file already under the root is published
  in place;
- without, publish every file where it is; a file outside the root is
  refused without being read.

Every file the consumer would dead-letter for certain (outside the root
without a copy, unreadable, not DICOM, malformed, a UID missing or invalid)
is *refused*: listed with its reason, never published. The checks reuse the
one read each file gets anyway (the first bytes, then the memory-mapped
header), so "up front" costs no second pass over the folder.

Store events go out in batches; each batch waits for Kafka's
acknowledgements, and every message Kafka refused is a failed file. One
"DICOM Instances Transferred" audit event is published per study.
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomflow.audit import events as audit
from dicomflow.dicom.constants import EXPLICIT_VR_LE
from dicomflow.dicom.part10 import file_header, read_file_meta
from dicomflow.errors import ConfigError, PublishError
from dicomflow.ingest.duplicates import DuplicateInstanceError, Placement, place
from dicomflow.ingest.exceptions import IngestError
from dicomflow.ingest.ingestor import Identity, Ingestor, Source
from dicomflow.ingest.placement_s3 import S3Placement, S3Writer
from dicomflow.ingest.storage import PendingFile, sync_folder_durably
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.kafka.producer import Publisher
from dicomflow.models import AuditEvent, DicomStoreMeta
from dicomflow.scanner import decide
from dicomflow.scanner.uploads import duplicate_audit, s3_pending
from dicomflow.scanner.walk import SNIFF_BYTES, Layout, sniff
from dicomflow.settings import Settings

log = logging.getLogger(__name__)

#: What the store events say about where a published file came from.
PUBLISH_SOURCE = Source(ae_title="PUBLISH", address="127.0.0.1")
#: Events per Kafka batch (each batch waits for its acknowledgements).
DEFAULT_BATCH = 500
#: Files read (and copied) at once: the waits on fsync overlap.
DEFAULT_THREADS = 4


#: Why a file was not published: the consumer would refuse it; nothing to publish (stored
#: already); or it could not be handled (the copy or Kafka failed: worth a retry).
Kind = Literal["refused", "skipped", "failed"]


@dataclass(frozen=True)
class NotPublished:
    """A file that was not published, and why.

    ``kind`` ``refused``: the consumer would dead-letter it (outside the
    storage root with ``--no-copy``, unreadable, not DICOM, a UID missing or
    invalid); ``retry`` marks the refusals a retry can cure once their cause
    is fixed (the file could not be read). ``skipped``: stored already
    (``ingest.duplicates`` decided). ``failed``: the copy or Kafka failed.
    """

    path: Path
    reason: str
    kind: Kind = "refused"
    retry: bool = False
    #: Audit events the run publishes for this file (a duplicate SOP Instance UID).
    audit: tuple[AuditEvent, ...] = ()

    @property
    def failed(self) -> bool:
        return self.kind == "failed"


@dataclass(frozen=True)
class Prepared:
    """A file ready to publish: its store event, and where it was before a copy."""

    source: Path
    identity: Identity
    event: DicomStoreMeta
    #: True when the event names a copy in the storage layout, False when the file itself.
    copied: bool
    #: How a copy was placed (replace: the old copy is kept until the event is acknowledged).
    placement: Placement | S3Placement | None = None
    #: Audit events the run publishes for this file (a replaced duplicate).
    audit: tuple[AuditEvent, ...] = ()


@dataclass
class Summary:
    """The outcome of one run: every file found is in exactly one of the four lists."""

    published: list[Prepared] = field(default_factory=list)
    refused: list[NotPublished] = field(default_factory=list)
    skipped: list[NotPublished] = field(default_factory=list)
    failed: list[NotPublished] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, item: NotPublished) -> None:
        {"refused": self.refused, "skipped": self.skipped, "failed": self.failed}[item.kind].append(item)

    @property
    def copied(self) -> int:
        """Published files whose events name their copy in the storage layout."""
        return sum(1 for p in self.published if p.copied)

    def refused_reasons(self) -> Counter[str]:
        """Refusal reasons with their counts (the reason's first clause, for grouping)."""
        return Counter(s.reason.split(":")[0] for s in self.refused)

    @property
    def ok(self) -> bool:
        """No file failed and none was refused for a cause a retry can cure (exit code 0)."""
        return not self.failed and not any(r.retry for r in self.refused)


class FolderPublisher:
    """Publishes store events for DICOM files found under some paths.

    ``publisher`` is borrowed (the caller closes it). ``copy_into_storage``
    (the default) copies files from outside the storage root into it; False
    publishes every file where it is and refuses those outside the root (see
    :mod:`~dicomflow.scanner.decide`).

    On ``storage.backend = "s3"`` every file is uploaded to the bucket (a
    Part 10 file from where it is, :mod:`~dicomflow.ingest.placement_s3`),
    even one under the storage root, and the events name ``s3://`` locations.

    Raises:
        ConfigError: (constructor) the tenant is not a valid tenant id; ``--no-copy`` on s3.
    """

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        *,
        tenant: str | None = None,
        copy_into_storage: bool = True,
        batch_size: int = DEFAULT_BATCH,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        if settings.storage.backend == "s3" and not copy_into_storage:
            raise ConfigError("storage.backend", "settings", "--no-copy publishes files where they are, but on s3 "
                              "every instance is read from the bucket: run without --no-copy to upload them")
        self.ingestor = Ingestor(settings.storage, settings.ingest, settings.worker_node_id, tenant_override=tenant)
        self.copy_into_storage = copy_into_storage
        self.batch_size = max(1, batch_size)
        self.threads = max(1, threads)
        self.timeout_s = settings.kafka.message_timeout_ms / 1000 + 5.0
        self._audit = TransferLog(settings.worker_node_id, self._emit_audit)

    def close(self) -> None:
        """Wait for the storage layer's background requests (S3: markers of acknowledged instances)."""
        self.ingestor.close()

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
                    else:  # refused up front (or nothing to publish, or failed): never sent
                        summary.add(outcome)
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

    def prepare(self, path: Path) -> Prepared | NotPublished:
        """Judge, read, validate and (when needed) copy one file; never raises, never publishes.

        A duplicate's audit event comes back with the outcome; :meth:`run` publishes it.
        """
        try:
            return self._prepare(path)
        except IngestError as exc:
            return NotPublished(path, exc.reason, "refused" if exc.poison else "failed")
        except OSError as exc:  # the copy's own errors are IngestErrors: this is the file being read
            return NotPublished(path, f"cannot read: {exc.strerror or exc}", retry=True)
        except Exception as exc:  # one odd file must not stop the run
            log.exception("unexpected error reading %s", path)
            return NotPublished(path, f"unexpected error: {type(exc).__name__}: {exc}", "failed")

    def _prepare(self, path: Path) -> Prepared | NotPublished:
        """The checks in the order of their cost: the path, the inode, the first bytes, the header.

        Raises:
            OSError: the file cannot be opened or read.
            IngestError: as :meth:`_prepare_mapped`.
        """
        resolved = Path(os.path.realpath(path))  # as the consumer resolves file_path (never raises on a loop)
        refusal = decide.refusal_before_reading(resolved, self.ingestor.root, copy=self.copy_into_storage)
        if refusal is not None:
            return NotPublished(path, refusal)
        # O_NONBLOCK: opening a FIFO must not wait for a writer (no effect on regular files)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return NotPublished(path, "cannot read: not a regular file (a FIFO, socket or device)")
            size = info.st_size
            sniffed = sniff(f.read(SNIFF_BYTES), size)
            if sniffed is None:
                return NotPublished(path, "not DICOM: no DICM prefix and no data set start" if size else "not DICOM: empty file")
            where: decide.Where = "copy" if self.ingestor.s3 is not None else decide.where(  # S3: always uploaded
                inside_root=decide.is_under(resolved, self.ingestor.root), layout=sniffed.layout,
                copy=self.copy_into_storage)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                return self._prepare_mapped(path, resolved, buf, sniffed.layout, sniffed.transfer_syntax_uid, where)

    def _prepare_mapped(
        self, path: Path, resolved: Path, buf: mmap.mmap, layout: Layout, raw_syntax: str | None, where: decide.Where
    ) -> Prepared | NotPublished:
        """Read the header as the consumer will, then copy (``where == "copy"``) and describe the file.

        Raises:
            IngestError: the header is unusable (poison), or the copy failed.
        """
        sop_class = sop_instance = None
        if layout == "raw":
            syntax, offset = raw_syntax or EXPLICIT_VR_LE, 0
        else:
            try:
                meta, offset = read_file_meta(buf, 132 if layout == "part10" else 0)
            except ValueError as exc:
                return NotPublished(path, f"unusable file meta information: {exc}")
            syntax = meta.transfer_syntax_uid
            sop_class, sop_instance = meta.media_storage_sop_class_uid, meta.media_storage_sop_instance_uid
        if layout == "part10" or where == "in-place":  # the consumer reads this file, or a byte-for-byte copy
            header = self.ingestor.read_part10(buf, str(path))
        else:  # ... or this data set behind the preamble and meta the copy gets
            header = self.ingestor.read(buf, syntax, offset=offset, name=str(path))
        identity = self.ingestor.identify(header, sop_class_uid=sop_class, sop_instance_uid=sop_instance, calling_ae=None)
        target: Path | str = resolved
        size = len(buf)  # the mapping spans the whole file
        placement: Placement | S3Placement | None = None
        audit_events: tuple[AuditEvent, ...] = ()
        if self.ingestor.s3 is not None:
            uploaded = self._upload(path, resolved, buf, layout, offset, syntax, identity, self.ingestor.s3)
            if isinstance(uploaded, NotPublished):
                return uploaded
            placement, audit_events = uploaded
            target, size = self.ingestor.location_of(identity), placement.size
        elif where == "copy" and (dest := self.ingestor.path_of(identity)) != resolved:
            target = dest
            copied = self._copy(path, buf, layout, offset, syntax, identity, dest)
            if isinstance(copied, NotPublished):
                return copied
            placement, audit_events = copied
            size = placement.size
        event = self.ingestor.store_event(identity, target, size, syntax, PUBLISH_SOURCE)
        return Prepared(path, identity, event, placement is not None, placement, audit_events)

    def _copy(
        self, path: Path, buf: mmap.mmap, layout: Layout, offset: int, syntax: str, identity: Identity, target: Path
    ) -> tuple[Placement | S3Placement, tuple[AuditEvent, ...]] | NotPublished:
        """Write the file's copy to ``target`` durably, as the receiver writes; duplicates per ``ingest.duplicates``.

        Raises:
            IngestError: the copy could not be written (not poison: worth a retry).
        """
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
            return NotPublished(path, f"{exc.reason}: {target}", "skipped",
                                audit=(duplicate_audit(self.settings, PUBLISH_SOURCE, identity, target, None, pending.size),))
        finally:
            pending.discard()
        if self.ingestor.fsync:
            sync_folder_durably(target.parent)
        return self._placed(path, identity, target, placement, received)

    def _upload(
        self, path: Path, resolved: Path, buf: mmap.mmap, layout: Layout, offset: int, syntax: str, identity: Identity,
        s3: S3Writer,
    ) -> tuple[Placement | S3Placement, tuple[AuditEvent, ...]] | NotPublished:
        """The S3 backend's :meth:`_copy`: a Part 10 file goes up from where it is, a raw data set through the spool.

        Raises:
            IngestError: the upload failed (S3 unavailable: not poison, worth a retry).
        """
        key = self.ingestor.key_of(identity)
        location = s3.store.location(key)
        pending = s3_pending(s3, key, resolved, buf, layout, offset, syntax, identity)
        try:
            received = pending.seal()
            placement = s3.place(pending, sop_uid=identity.sop_uid)
        except DuplicateInstanceError as exc:
            return NotPublished(path, f"{exc.reason}: {location}", "skipped",
                                audit=(duplicate_audit(self.settings, PUBLISH_SOURCE, identity, location, None, pending.size),))
        finally:
            pending.discard()
        return self._placed(path, identity, location, placement, received)

    def _placed(
        self, path: Path, identity: Identity, target: Path | str, placement: Placement | S3Placement, received: int,
    ) -> tuple[Placement | S3Placement, tuple[AuditEvent, ...]] | NotPublished:
        """A placed copy: its duplicate's audit event, and whether it is published."""
        audit_events: tuple[AuditEvent, ...] = ()
        if placement.duplicate:
            audit_events = (duplicate_audit(self.settings, PUBLISH_SOURCE, identity, target, placement, received),)
        if not placement.publish:
            what = "identical content" if placement.outcome == "identical" else (
                "other content, the stored copy kept (ingest.duplicates = keep)")
            return NotPublished(path, f"already stored with {what}: {target}", "skipped", audit=audit_events)
        return placement, audit_events

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
                summary.failed.append(NotPublished(prepared.source, f"Kafka did not acknowledge: {failed[index]}", "failed"))
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


__all__ = ["DEFAULT_BATCH", "FolderPublisher", "Kind", "NotPublished", "Prepared", "Summary"]
