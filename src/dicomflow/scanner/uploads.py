"""Pieces of ``publish``'s copy step: what goes up to S3 for a file, and the audit event of a duplicate.

Apart from :mod:`~dicomflow.scanner.publish` to keep that module to the run itself.
"""

from __future__ import annotations

import logging
import mmap
from pathlib import Path

from dicomflow.audit import events as audit
from dicomflow.dicom.part10 import file_header
from dicomflow.ingest.duplicates import Placement
from dicomflow.ingest.ingestor import Identity, Source
from dicomflow.ingest.placement_s3 import S3Placement, S3Writer, SpoolFile, Upload
from dicomflow.models import AuditEvent
from dicomflow.scanner.walk import Layout
from dicomflow.settings import Settings

log = logging.getLogger(__name__)


def s3_pending(s3: S3Writer, key: str, resolved: Path, buf: mmap.mmap, layout: Layout, offset: int, syntax: str,
               identity: Identity) -> SpoolFile | Upload:
    """The upload of one file: a Part 10 file from where it is, a raw data set through the spool behind a header.

    Raises:
        StorageWriteError: the file or the spool cannot be read or written.
    """
    if layout == "part10":
        return s3.upload(key, resolved)
    pending = s3.spool_file(key)  # a raw data set (or a meta group without preamble) gets a proper header
    with memoryview(buf) as view:
        pending.write(file_header(identity.sop_class_uid, identity.sop_uid, syntax, None))
        pending.write(view[offset:])
    return pending


def duplicate_audit(settings: Settings, source: Source, identity: Identity, target: Path | str,
                    placement: Placement | S3Placement | None, received: int) -> AuditEvent:
    """The audit event of a non-identical duplicate (``placement`` None: rejected), logged here."""
    decision = placement.outcome if placement is not None else "rejected"
    log.warning("%s: SOP Instance UID %s stored already with other content; %s", target, identity.sop_uid, decision)
    return audit.duplicate_instance(
        node_id=settings.worker_node_id, tenant_id=identity.tenant, study_uid=identity.study_uid,
        sop_uid=identity.sop_uid, sop_class_uid=identity.sop_class_uid, decision=decision,
        file_path=str(target), stored_size=placement.previous_size if placement is not None else None,
        received_size=received, source_ae=source.ae_title, source_address=source.address,
        destination_ae=settings.receiver.ae_title,
    )


__all__ = ["duplicate_audit", "s3_pending"]
