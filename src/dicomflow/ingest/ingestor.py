"""From encoded bytes to a durable file and its store event: shared by the SCP and ``publish``.

:class:`Ingestor` holds the decisions every entry point makes the same way:
which UIDs are acceptable, which tenant, where the file goes, whether the
transfer syntax is served as is, and what the store event says. It does not
publish: the SCP publishes one event per C-STORE and waits for it, the folder
publisher sends batches. Each caller runs the steps itself (read, identify,
open_file or write, store_event) because each overlaps them differently with
publishing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from dicomflow.dicom import derived, reader
from dicomflow.dicom.constants import EXPLICIT_VR_LE, WANTED
from dicomflow.dicom.derived import InstanceHeader
from dicomflow.dicom.exceptions import DerivedValueError, UnreadableDicom
from dicomflow.dicom.part10 import Buffer, file_header
from dicomflow.dicom.walker import RawHeader
from dicomflow.ingest.duplicates import Policy
from dicomflow.ingest.exceptions import (
    InvalidUIDError,
    MalformedDatasetError,
    MissingAttributeError,
    StorageWriteError,
)
from dicomflow.ingest.placement_s3 import S3Writer, Upload
from dicomflow.ingest.storage import PendingFile, write_atomic
from dicomflow.ingest.tenant import TenantResolver
from dicomflow.ingest.uids import FILE_PATH_MAX_BYTES, instance_path, require_uid
from dicomflow.models import DicomStoreMeta, TransferStatus, now, uid_hash
from dicomflow.settings import IngestSettings, StorageSettings, tenant_tag

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


class Ingestor:
    """Validates, places and describes instances under one storage root.

    Raises:
        ConfigError: (constructor) a tenant setting is not a valid tenant id.
    """

    def __init__(
        self,
        storage: StorageSettings,
        ingest: IngestSettings,
        node_id: str,
        *,
        tenant_override: str | None = None,
    ) -> None:
        #: The ``[ingest]`` section these decisions come from.
        self.settings = ingest
        self.root = storage.root.resolve()
        self.tenants = TenantResolver(ingest.ae_tenants, storage.default_tenant, override=tenant_override)
        self.tenant_tag = tenant_tag(ingest)
        #: What the consumer reads, plus the tenant tag.
        self.wanted = WANTED | {self.tenant_tag}
        self.supported = frozenset(ingest.supported_transfer_syntaxes)
        self.fsync = ingest.fsync
        self.node_id = node_id
        #: ingest.duplicates: what :func:`~dicomflow.ingest.duplicates.place` does with a different copy.
        self.duplicates: Policy = ingest.duplicates
        #: On ``storage.backend = "s3"``: where instances go (:mod:`~dicomflow.ingest.placement_s3`); None: files.
        self.s3: S3Writer | None = None
        #: Local folder of data sets still arriving: the storage root, or the spool on S3.
        self.local_root = self.root
        if storage.backend == "s3":
            from dicomflow.blobs import open_store  # obstore loads only where S3 is used

            self.s3 = S3Writer(open_store(storage), storage.spool, self.duplicates)
            self.local_root = self.s3.spool

    def close(self) -> None:
        """Wait for the background requests of the S3 backend (nothing to do on the filesystem)."""
        if self.s3 is not None:
            self.s3.close()

    # ------------------------------------------------------------------ steps

    def read_prefix(self, prefix: Buffer, transfer_syntax_uid: str, *, name: str = "data set") -> InstanceHeader | None:
        """The header from the first bytes of a data set still arriving; None when more are needed.

        Only where the file goes is decided from the prefix: the complete
        file is judged by :meth:`check_file` before it is accepted. None too
        when the walker declines the encoding from a prefix (deflated,
        unusual): the caller keeps reading and judges the whole data set.

        Raises:
            MissingAttributeError: a required UID is missing or empty.
            InvalidUIDError: a required UID is malformed.
        """
        received = now()
        raw = reader.read_dataset_prefix(prefix, transfer_syntax_uid, wanted=self.wanted, name=name)
        return None if raw is None else self.derive(raw, name, received)

    def check_file(self, path: Path, header: InstanceHeader, *, name: str = "data set") -> None:
        """The validity rule on a file written as its data set arrived (header read from its prefix).

        The file is read exactly as the consumer will read it, and its UIDs
        must still be the ones its place was chosen by.

        Raises:
            MalformedDatasetError: the consumer could not index the file (the reason says where),
                or its UIDs differ from its prefix's.
            StorageWriteError: the file cannot be read back (storage failed).
        """
        try:
            raw = reader.read_file(str(path), self.wanted)
        except UnreadableDicom as exc:
            raise MalformedDatasetError(exc.reason) from exc
        except OSError as exc:
            raise StorageWriteError(f"cannot read back the file ({exc.strerror or exc}): {path}") from exc
        whole = self.derive(raw, name, header.received)
        if (whole.study_uid, whole.series_uid, whole.sop_instance_uid, whole.sop_class_uid) != (
            header.study_uid, header.series_uid, header.sop_instance_uid, header.sop_class_uid
        ):
            raise MalformedDatasetError("the data set repeats its UIDs with other values")

    def open_file(self, identity: Identity, transfer_syntax_uid: str, source: Source) -> PendingFile:
        """The instance's file, open: a temporary file beside its place, preamble and File Meta Information written.

        The data set follows with :meth:`PendingFile.write
        <dicomflow.ingest.storage.PendingFile.write>` (or a kernel copy into
        its ``fileno()``); then :meth:`~dicomflow.ingest.storage.PendingFile.seal`
        and :func:`~dicomflow.ingest.duplicates.place` put it in place, or
        :meth:`~dicomflow.ingest.storage.PendingFile.discard` drops it.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
            StorageWriteError: the path would exceed 512 bytes, or the file
                cannot be created or written (nothing is left behind).
        """
        head = self._file_head(identity, transfer_syntax_uid, source)
        if self.s3 is not None:  # received into the spool, uploaded when complete
            pending: PendingFile = self.s3.spool_file(self.key_of(identity))
        else:
            pending = PendingFile(self.path_of(identity), fsync=self.fsync)
        pending.write(head)
        return pending

    def open_upload(self, identity: Identity, dataset: Buffer, transfer_syntax_uid: str, source: Source) -> Upload:
        """The S3 backend's :meth:`open_file` for a data set already in memory: no spool file.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
            StorageWriteError: the key would exceed 512 bytes.
        """
        assert self.s3 is not None, "open_upload is for the s3 backend"
        key = self.key_of(identity)
        head = self._file_head(identity, transfer_syntax_uid, source)
        return self.s3.upload(key, b"".join((head, dataset)))

    def _file_head(self, identity: Identity, transfer_syntax_uid: str, source: Source) -> bytes:
        """Preamble and File Meta Information of the instance's file.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
        """
        syntax = require_uid(transfer_syntax_uid, "Transfer Syntax UID")
        return file_header(identity.sop_class_uid, identity.sop_uid, syntax, source.ae_title)

    def read(self, dataset: Buffer, transfer_syntax_uid: str, *, offset: int = 0, name: str = "data set") -> InstanceHeader:
        """Read and judge an encoded data set (from ``offset``) the way the consumer will read its file.

        The one validity rule: an instance the consumer could not index
        (truncated, unreadable, a required UID missing or invalid) is
        refused here, to its sender, instead of reaching the dead-letter
        topic later.

        Raises:
            MalformedDatasetError: the data set cannot be read (the reason says where).
            MissingAttributeError: a required UID is missing or empty.
            InvalidUIDError: a required UID is malformed.
        """
        received = now()
        try:
            raw = reader.read_dataset(
                dataset, transfer_syntax_uid, offset=offset, wanted=self.wanted, name=name,
                file_prefix=lambda: file_header("1.2", "1.2", transfer_syntax_uid),
            )
        except UnreadableDicom as exc:
            raise MalformedDatasetError(exc.reason) from exc
        return self.derive(raw, name, received)

    def read_part10(self, buf: Buffer, name: str) -> InstanceHeader:
        """:meth:`read` for the bytes of a whole Part 10 file (memory-mapped by the folder publisher).

        Raises:
            MalformedDatasetError, MissingAttributeError, InvalidUIDError: as :meth:`read`.
        """
        received = now()
        try:
            raw = reader.read_part10(buf, name, wanted=self.wanted)
        except UnreadableDicom as exc:
            raise MalformedDatasetError(exc.reason) from exc
        return self.derive(raw, name, received)

    def derive(self, raw: RawHeader, name: str, received: dt.datetime) -> InstanceHeader:
        """The derived values of a readable header (:mod:`dicomflow.dicom.derived`, as the consumer).

        Raises:
            MissingAttributeError: a required UID is missing or empty.
            InvalidUIDError: a required UID is malformed.
            MalformedDatasetError: a value no reader can decode (a NUL in Specific Character Set).
        """
        try:
            return derived.instance_header(raw, name=name, tenant_tag=self.tenant_tag, received=received)
        except UnreadableDicom as exc:
            raise MalformedDatasetError(exc.reason) from exc
        except DerivedValueError as exc:
            if exc.missing:  # worded for a C-STORE Error Comment (64 characters)
                raise MissingAttributeError(f"{exc.attribute} (required) is missing or empty") from exc
            raise InvalidUIDError(exc.attribute, exc.value, exc.problem) from exc

    def identify(
        self,
        header: InstanceHeader,
        *,
        sop_class_uid: str | None,
        sop_instance_uid: str | None,
        calling_ae: str | None,
    ) -> Identity:
        """Validate the UIDs and resolve the tenant.

        The header's UIDs are already required and validated by :meth:`read`
        (the data set must carry them: the consumer reads the data set, not
        the request). ``sop_class_uid`` / ``sop_instance_uid`` are what the
        C-STORE request (or the file meta information) announced: when the
        SOP Instance UID differs, the data set wins (it is what the consumer
        reads and what the written meta information will say) and a warning
        is logged.

        Raises:
            InvalidUIDError: a UID is malformed.
            InvalidTenantError: the tenant tag holds an unsafe id.
        """
        announced_sop = (sop_instance_uid or "").rstrip("\x00 ") or None
        sop_class = header.sop_class_uid
        sop_uid = require_uid(header.sop_instance_uid, "SOP Instance UID")
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

    def key_of(self, identity: Identity) -> str:
        """The instance's key in the storage layer (its path relative to the root, on every backend).

        Raises:
            StorageWriteError: the path, or on S3 the ``s3://`` location, would exceed the wire format's 512 bytes.
        """
        key = self.path_of(identity).relative_to(self.root).as_posix()
        if self.s3 is not None and len(self.s3.store.location(key).encode()) > FILE_PATH_MAX_BYTES:
            raise StorageWriteError(f"the location of {key[:80]}... exceeds {FILE_PATH_MAX_BYTES} bytes; "
                                    "use a shorter storage.s3.prefix", sop_uid=identity.sop_uid)
        return key

    def location_of(self, identity: Identity) -> str:
        """What a store event of the instance names: its path, or ``s3://bucket/key``."""
        if self.s3 is not None:
            return self.s3.store.location(self.key_of(identity))
        return str(self.path_of(identity))

    def transfer_status(self, transfer_syntax_uid: str) -> tuple[TransferStatus, str]:
        """``(transfer_status, target_ts)``: served as received, or transcoded to Explicit VR LE later."""
        if transfer_syntax_uid in self.supported:
            return "NoNeedTransfer", transfer_syntax_uid
        return "NeedTransfer", EXPLICIT_VR_LE

    def store_event(
        self, identity: Identity, path: Path | str, file_size: int, transfer_syntax_uid: str, source: Source
    ) -> DicomStoreMeta:
        """The store event describing a stored file (a new trace_id each time); ``path``: its location."""
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
            created_time=header.received,
            series_uid_hash=uid_hash(identity.series_uid),
            study_uid_hash=uid_hash(identity.study_uid),
            accession_number=header.accession_number,
            target_ts=target,
            study_date=header.study_date,
            transfer_status=status,
            source_ip=source.address,
            source_ae=source.ae_title,
        )

    def write(
        self, identity: Identity, dataset: bytes, transfer_syntax_uid: str, source: Source, *,
        defer_folder_sync: bool = False,
    ) -> tuple[Path, int]:
        """Write preamble + meta + the data set as received to its place; return (path, size).

        With ``defer_folder_sync`` the caller must run
        :func:`~dicomflow.ingest.storage.sync_folder_durably` on the file's
        folder (when :attr:`fsync` is on) before it promises durability.

        Raises:
            InvalidUIDError: the transfer syntax UID is malformed.
            StorageWriteError: the file could not be written durably.
        """
        path = self.path_of(identity)
        head = self._file_head(identity, transfer_syntax_uid, source)
        size = write_atomic(path, (head, dataset), fsync=self.fsync, sync_folder=not defer_folder_sync)
        return path, size


__all__ = ["Identity", "Ingestor", "Source"]
