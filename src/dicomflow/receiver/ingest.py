"""From encoded bytes to a durable file and its store event: shared by the SCP and ``publish``.

:class:`Ingestor` holds the decisions every entry point makes the same way:
which UIDs are acceptable, which tenant, where the file goes, whether the
transfer syntax is served as is, and what the store event says. It does not
publish: the SCP publishes one event per C-STORE and waits for it, the folder
publisher sends batches.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from dicomflow.models import DicomStoreMeta, TransferStatus, now, uid_hash
from dicomflow.receiver.duplicates import Policy
from dicomflow.receiver.exceptions import MissingAttributeError
from dicomflow.receiver.header import InstanceHeader, read_header, read_header_prefix
from dicomflow.receiver.part10 import EXPLICIT_VR_LE, Buffer, file_header
from dicomflow.receiver.storage import write_atomic
from dicomflow.receiver.tenant import TenantResolver
from dicomflow.receiver.uids import instance_path, require_uid
from dicomflow.settings import ReceiverSettings, StorageSettings, tenant_tag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """The validated identity of one instance: safe to use in paths and keys."""

    tenant: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    header: InstanceHeader


@dataclass(frozen=True)
class Source:
    """Where an instance came from (for the store event and the audit trail)."""

    ae_title: str
    address: str


@dataclass(frozen=True)
class Stored:
    """An instance written durably, with the store event describing it (not yet published)."""

    identity: Identity
    path: Path
    event: DicomStoreMeta


class Ingestor:
    """Validates, places and describes instances under one storage root.

    Raises:
        ConfigError: (constructor) a tenant setting is not a valid tenant id.
    """

    def __init__(
        self,
        storage: StorageSettings,
        receiver: ReceiverSettings,
        node_id: str,
        *,
        tenant_override: str | None = None,
        duplicates: Policy = "reject",
    ) -> None:
        self.root = storage.root.resolve()
        self.tenants = TenantResolver(receiver.ae_tenants, storage.default_tenant, override=tenant_override)
        self.tenant_tag = tenant_tag(receiver)
        self.supported = frozenset(receiver.supported_transfer_syntaxes)
        self.fsync = receiver.fsync
        self.node_id = node_id
        #: ingest.duplicates: what :func:`~dicomflow.receiver.duplicates.place` does with a different copy.
        self.duplicates: Policy = duplicates

    # ------------------------------------------------------------------ steps

    def read_prefix(self, prefix: Buffer, transfer_syntax_uid: str) -> InstanceHeader | None:
        """The header from the first bytes of a data set still arriving; None when more are needed.

        Raises:
            MalformedDatasetError: the bytes at hand cannot be a data set.
        """
        return read_header_prefix(prefix, transfer_syntax_uid, tenant_tag=self.tenant_tag)

    def file_head(self, identity: Identity, transfer_syntax_uid: str, source: Source) -> bytes:
        """Preamble and File Meta Information of the instance's file.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
        """
        syntax = require_uid(transfer_syntax_uid, "Transfer Syntax UID")
        return file_header(identity.sop_class_uid, identity.sop_uid, syntax, source.ae_title)

    def read(self, dataset: Buffer, transfer_syntax_uid: str, *, offset: int = 0) -> InstanceHeader:
        """Read the header attributes of an encoded data set.

        Raises:
            MalformedDatasetError: the data set cannot be read.
        """
        return read_header(dataset, transfer_syntax_uid, tenant_tag=self.tenant_tag, offset=offset)

    def identify(
        self,
        header: InstanceHeader,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_ae: str | None,
    ) -> Identity:
        """Validate the UIDs and resolve the tenant.

        ``sop_class_uid`` / ``sop_instance_uid`` are what the C-STORE request
        (or the file meta information) announced; they stand in when the data
        set lacks them. When they differ from the data set's, the data set
        wins (it is what the consumer reads and what the written meta
        information will say) and a warning is logged.

        Raises:
            MissingAttributeError: a Study / Series / SOP Instance UID or SOP Class UID is missing.
            InvalidUIDError: a UID is malformed.
            InvalidTenantError: the tenant tag holds an unsafe id.
        """
        announced_sop = (sop_instance_uid or "").rstrip("\x00 ") or None
        sop_class = header.sop_class_uid or (sop_class_uid or "").rstrip("\x00 ") or None
        for name, value in (
            ("Study Instance UID", header.study_uid),
            ("Series Instance UID", header.series_uid),
            ("SOP Instance UID", header.sop_instance_uid or announced_sop),
            ("SOP Class UID", sop_class),
        ):
            if not value:
                raise MissingAttributeError(f"{name} (required) is missing or empty", sop_uid=announced_sop)
        sop_uid = require_uid(header.sop_instance_uid or announced_sop, "SOP Instance UID")
        if announced_sop is not None and announced_sop != sop_uid:
            log.warning("SOP Instance UID %s of the data set differs from the announced %s; keeping the data set's",
                        sop_uid, announced_sop[:64])
        return Identity(
            tenant=self.tenants.resolve(header.tenant, calling_ae),
            study_uid=require_uid(header.study_uid, "Study Instance UID"),
            series_uid=require_uid(header.series_uid, "Series Instance UID"),
            sop_uid=sop_uid,
            sop_class_uid=require_uid(sop_class, "SOP Class UID"),
            header=header,
        )

    def path_of(self, identity: Identity) -> Path:
        """Where the instance is stored under the root.

        Raises:
            StorageWriteError: the path would exceed the wire format's 512 bytes.
        """
        return instance_path(
            self.root, identity.tenant, identity.header.study_date,
            identity.study_uid, identity.series_uid, identity.sop_uid,
        )

    def transfer_status(self, transfer_syntax_uid: str) -> tuple[TransferStatus, str]:
        """``(transfer_status, target_ts)``: served as received, or transcoded to Explicit VR LE later."""
        if transfer_syntax_uid in self.supported:
            return "NoNeedTransfer", transfer_syntax_uid
        return "NeedTransfer", EXPLICIT_VR_LE

    def store_event(
        self, identity: Identity, path: Path, file_size: int, transfer_syntax_uid: str, source: Source
    ) -> DicomStoreMeta:
        """The store event describing a stored file (a new trace_id each time)."""
        status, target = self.transfer_status(transfer_syntax_uid)
        header = identity.header
        return DicomStoreMeta(
            trace_id=str(uuid.uuid4()),
            worker_node_id=self.node_id,
            tenant_id=identity.tenant,
            patient_id=header.patient_id,
            study_uid=identity.study_uid,
            series_uid=identity.series_uid,
            sop_uid=identity.sop_uid,
            file_size=file_size,
            file_path=str(path),
            transfer_syntax_uid=transfer_syntax_uid,
            number_of_frames=header.number_of_frames,
            created_time=now(),
            series_uid_hash=uid_hash(identity.series_uid),
            study_uid_hash=uid_hash(identity.study_uid),
            accession_number=header.accession_number,
            target_ts=target,
            study_date=header.study_date,
            transfer_status=status,
            source_ip=source.address,
            source_ae=source.ae_title,
        )

    # ------------------------------------------------------------------ the whole thing

    def write(
        self, identity: Identity, dataset: bytes, transfer_syntax_uid: str, source: Source, *,
        defer_folder_sync: bool = False,
    ) -> tuple[Path, int]:
        """Write preamble + meta + the data set as received to its place; return (path, size).

        With ``defer_folder_sync`` the caller must run
        :func:`~dicomflow.receiver.storage.sync_folder_durably` on the file's
        folder (when :attr:`fsync` is on) before it promises durability.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
            StorageWriteError: the file could not be written durably.
        """
        path = self.path_of(identity)
        syntax = require_uid(transfer_syntax_uid, "Transfer Syntax UID")
        head = file_header(identity.sop_class_uid, identity.sop_uid, syntax, source.ae_title)
        size = write_atomic(path, (head, dataset), fsync=self.fsync, sync_folder=not defer_folder_sync)
        return path, size

    def store(
        self,
        dataset: bytes,
        *,
        transfer_syntax_uid: str,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        source: Source,
    ) -> Stored:
        """Validate, write and describe one encoded data set (read, identify, write, store_event).

        Raises:
            IngestError: any reason to refuse the instance; its ``status``
                is the C-STORE status to answer.
        """
        header = self.read(dataset, transfer_syntax_uid)
        identity = self.identify(
            header, sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid, calling_ae=source.ae_title
        )
        path, size = self.write(identity, dataset, transfer_syntax_uid, source)
        return Stored(identity, path, self.store_event(identity, path, size, transfer_syntax_uid, source))

__all__ = ["Identity", "Ingestor", "Source", "Stored"]
