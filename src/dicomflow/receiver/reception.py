"""One C-STORE data set received as a stream: header from the first bytes, the rest straight to disk.

An engine creates a :class:`Reception` when a C-STORE command announces a
data set, feeds it each P-DATA fragment as it arrives and calls
:meth:`Reception.finish` after the last one. Memory stays bounded whatever
the data set's size:

1. the first fragments are kept until the header can be read from them
   (:meth:`~dicomflow.ingest.ingestor.Ingestor.read_prefix`, through the one
   DICOM layer: it needs the elements up to the tenant tag, usually a few
   kB). A data set that fits in its first fragment (most CT / MR images,
   with 1 MiB PDUs) never goes further: it is read, judged and written in
   one piece;
2. then the instance's identity is known, its temporary file is created
   beside its final name (on S3: in the spool, and the marker object's PUT
   starts, :mod:`~dicomflow.ingest.placement_s3`) with the preamble and File
   Meta Information, and every further fragment is appended as it arrives;
3. :meth:`finish` judges the complete file by the validity rule the consumer
   applies (:meth:`~dicomflow.ingest.ingestor.Ingestor.check_file`: a
   truncated pixel data element, say, is refused here), then hands over to
   the store service (sync, place, publish, answer).

If the header is still not readable after :data:`PREFIX_CAP` bytes (a huge
element before the tenant tag), the data set is spilled to a temporary file
under ``{storage.root}/.incoming`` (``{storage.spool}/.incoming`` on S3) and copied in the kernel (``sendfile``)
behind its File Meta Information at the end: slower, still bounded.

What can go wrong: past ``receiver.max_dataset_bytes``, :meth:`feed`
raises :class:`DatasetTooLarge` (the engine aborts the association); a
refusal decided early (an invalid UID, disk full, an I/O error) removes the
temporary file, the rest of the data set is read and dropped, and
:meth:`finish` answers the failure status. Nothing is published for a data
set that was not stored whole.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import time
from pathlib import Path

from dicomflow.dicom.derived import InstanceHeader
from dicomflow.dicom.part10 import Buffer
from dicomflow.errors import ReceiverError
from dicomflow.ingest.exceptions import IngestError, StorageWriteError
from dicomflow.ingest.ingestor import Identity, Source
from dicomflow.ingest.service import StoreOutcome, StoreService
from dicomflow.ingest.storage import PendingFile
from dicomflow.ingest.transfer_log import SessionKey

log = logging.getLogger(__name__)

#: Bytes kept in memory while looking for the header before spilling to disk.
PREFIX_CAP = 4 * 1024 * 1024
#: Folder (under the storage root) for data sets whose header is not in their first PREFIX_CAP bytes.
INCOMING = ".incoming"
_SENDFILE_CHUNK = 64 * 1024 * 1024


class DatasetTooLarge(ReceiverError):
    """The data set grew past ``receiver.max_dataset_bytes``; the association must be aborted."""

    def __init__(self, received: int, limit: int) -> None:
        self.received = received
        self.limit = limit
        super().__init__(f"data set exceeds receiver.max_dataset_bytes ({received} > {limit} bytes)")


class Reception:
    """One data set arriving (see the module documentation). Used by one association thread."""

    def __init__(self, service: StoreService, session: SessionKey, *, transfer_syntax_uid: str,
                 sop_class_uid: str | None, sop_instance_uid: str | None, source: Source, max_bytes: int) -> None:
        self.service = service
        #: The association the data set arrives on (its transfer log entry).
        self.session = session
        self.transfer_syntax_uid = transfer_syntax_uid
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.source = source
        self.max_bytes = max_bytes
        self.size = 0
        #: Seconds spent writing fragments to disk (the write part of the store latency).
        self.write_s = 0.0
        self._prefix = bytearray()
        self._whole: Buffer | None = None
        self._next_parse = 0
        self._header: InstanceHeader | None = None
        self._identity: Identity | None = None
        self._file: PendingFile | None = None
        self._spill: PendingFile | None = None
        self._error: IngestError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held in memory right now (for the memory bound's tests)."""
        return len(self._prefix)

    def feed(self, fragment: Buffer, last: bool) -> None:
        """Take the next fragment of the data set.

        Raises:
            DatasetTooLarge: the data set is now larger than ``max_bytes``;
                everything received is discarded first.
        """
        self.size += len(fragment)
        if self.size > self.max_bytes:
            self.discard()
            raise DatasetTooLarge(self.size, self.max_bytes)
        if self._error is not None:
            return  # refused already: read and drop the rest
        try:
            if self._file is not None:
                self._write(self._file, fragment)
            elif self._spill is not None:
                self._write(self._spill, fragment)
            elif last and not self._prefix:
                self._whole = fragment  # the common case: the whole data set in one fragment
            else:
                self._prefix += fragment
                if not last and len(self._prefix) >= self._next_parse:
                    self._try_header()
        except IngestError as exc:
            self._fail(exc)

    def _write(self, target: PendingFile, data: Buffer) -> None:
        started = time.perf_counter()
        target.write(data)
        self.write_s += time.perf_counter() - started

    def _try_header(self) -> None:
        """Read the header from the prefix if it holds it; then open the file and stream from here on."""
        ingestor = self.service.ingestor
        started = time.perf_counter_ns()
        header = ingestor.read_prefix(self._prefix, self.transfer_syntax_uid)
        if self.service.stages is not None:
            self.service.stages.add("parse", time.perf_counter_ns() - started)
        if header is None:
            self._next_parse = 2 * len(self._prefix)
            if len(self._prefix) >= PREFIX_CAP:
                self._spill_prefix()
            return
        self._write(self._open(header), self._prefix)
        self._prefix = bytearray()

    def _open(self, header: InstanceHeader) -> PendingFile:
        """Identify the instance by its header and open its file (the time it takes counts as writing)."""
        ingestor = self.service.ingestor
        self._header = header
        self._identity = ingestor.identify(
            header, sop_class_uid=self.sop_class_uid, sop_instance_uid=self.sop_instance_uid,
            calling_ae=self.source.ae_title,
        )
        started = time.perf_counter()
        self._file = ingestor.open_file(self._identity, self.transfer_syntax_uid, self.source)
        self.write_s += time.perf_counter() - started
        return self._file

    def _spill_prefix(self) -> None:
        ingestor = self.service.ingestor
        name = f"spill-{os.getpid()}-{id(self):x}"
        self._spill = PendingFile(ingestor.local_root / INCOMING / name, fsync=False)
        log.info("data set from %s (%s): no header in its first %d bytes; spilling to disk",
                 self.source.ae_title, self.source.address, len(self._prefix))
        self._write(self._spill, self._prefix)
        self._prefix = bytearray()

    def _fail(self, exc: IngestError) -> None:
        self._error = exc
        self._drop_files()
        self._prefix = bytearray()
        self._whole = None

    def _drop_files(self) -> None:
        for pending in (self._file, self._spill):
            if pending is not None:
                pending.discard()

    def discard(self) -> None:
        """Drop everything received (the association ended mid-data set); no file is left."""
        self._drop_files()
        self._prefix = bytearray()
        self._whole = None

    def finish(self) -> StoreOutcome:
        """After the last fragment: store (sync, rename, publish) or refuse; the status to answer. Never raises."""
        service = self.service
        if self._error is not None:
            return service.refuse(self.session, self._error, self._header, self._identity, self.source)
        if self._file is None and self._spill is None:
            data = self._whole if self._whole is not None else self._prefix
            self._whole, self._prefix = None, bytearray()
            return service.store_bytes(self.session, data, self.transfer_syntax_uid, self.sop_class_uid,
                                       self.sop_instance_uid, self.source)
        try:
            if self._spill is not None:
                self._from_spill()
            assert self._file is not None and self._identity is not None and self._header is not None
            started = time.perf_counter_ns()
            self.service.ingestor.check_file(self._file.temp, self._header)
            if service.stages is not None:
                service.stages.add("check", time.perf_counter_ns() - started)
                service.stages.add("write", int(self.write_s * 1e9))
        except IngestError as exc:
            self._drop_files()
            return service.refuse(self.session, exc, self._header, self._identity, self.source)
        except Exception as exc:  # noqa: BLE001 - a handler answers a status, it never raises
            self._drop_files()
            return service.internal_error(self.session, exc, self._header, self._identity, self.source)
        return service.complete(self.session, self._identity, self._file, self.transfer_syntax_uid,
                                self.source, write_s=self.write_s)

    def _from_spill(self) -> None:
        """Read the header from the spilled data set, then copy it behind its File Meta Information."""
        spill = self._spill
        assert spill is not None
        ingestor = self.service.ingestor
        path = spill.temp
        with open(path, "rb") as src:
            size = os.fstat(src.fileno()).st_size
            with mmap.mmap(src.fileno(), size, access=mmap.ACCESS_READ) as view:
                # The walker over the mapped file, no copy; an encoding it declines is read whole.
                header = (ingestor.read_prefix(view, self.transfer_syntax_uid)
                          or ingestor.read(view, self.transfer_syntax_uid))
            target = self._open(header)
            started = time.perf_counter()
            try:
                _copy(src.fileno(), target, size)
            except OSError as exc:
                raise StorageWriteError(f"cannot write the file ({exc.strerror or exc}): {target.path}") from exc
            self.write_s += time.perf_counter() - started
        spill.discard()
        self._spill = None


def _copy(src_fd: int, dest: PendingFile, size: int) -> None:
    """Copy ``size`` bytes from ``src_fd`` to the end of ``dest`` in the kernel."""
    out_fd = dest.fileno()
    offset = 0
    while offset < size:
        sent = os.sendfile(out_fd, src_fd, offset, min(_SENDFILE_CHUNK, size - offset))
        if sent == 0:
            raise OSError(f"source ended after {offset} of {size} bytes")
        offset += sent
    dest.size += size


def clear_incoming(root: Path) -> None:
    """Remove spill files left by a receiver that was killed (observer: failures are logged)."""
    folder = root / INCOMING
    if not folder.is_dir():
        return
    for leftover in folder.iterdir():
        match = re.search(r"spill-(\d+)-", leftover.name)
        if match and _alive(int(match.group(1))):
            continue  # another worker process's data set in flight
        try:
            leftover.unlink()
        except OSError as exc:
            log.warning("could not remove %s: %s", leftover, exc.strerror)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["INCOMING", "PREFIX_CAP", "DatasetTooLarge", "Reception", "clear_incoming"]
