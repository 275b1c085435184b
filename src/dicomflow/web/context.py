"""What every DICOMweb route needs, built once per server process: settings, store, database, auth, audit, metrics.

Routes receive a :class:`WebContext` from their factory (``routes(ctx)``),
never globals. The PostgreSQL pool (:class:`~dicomflow.web.database.Database`:
read through ``ctx.db.connection()``, a database outage is a 503) and the
Kafka publisher are opened by the app's lifespan (in the worker process,
after any fork) and closed with it.

Auditing observes: an audit event is queued for the background sender
(:mod:`dicomflow.web.auditing`) and a failure is logged and counted
(``dicomflow_web_audit_failures``), never turned into a failed request.

Instances are read through the storage layer (:mod:`dicomflow.blobs`, the
backend ``[storage] backend`` names): :meth:`WebContext.locate` turns an
index row's location into a :class:`~dicomflow.web.blobio.Blob` (its key,
and on the filesystem backend the checked local path for fast local reads),
and :func:`blob_errors` turns the layer's errors into statuses: a location
outside the store 500, a missing object 404, an unavailable store (also a
storage root that is gone: an unmounted volume) 503 with ``Retry-After``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.errors import InvalidDicomError
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomflow.blobs import BlobLocationError, BlobNotFound, BlobStore, BlobUnavailable, open_store
from dicomflow.dicom.derived import uid_problem
from dicomflow.metrics.web import WebMetrics
from dicomflow.models import AuditEvent
from dicomflow.settings import Settings
from dicomflow.store.connection import first_line
from dicomflow.web.auth import Access, Authenticator, Principal
from dicomflow.web.blobio import Blob

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from dicomflow.kafka.producer import Publisher
    from dicomflow.web.auditing import AuditSender
    from dicomflow.web.database import Database

log = logging.getLogger(__name__)

#: Seconds a client is told to wait when the object store is unavailable (503).
RETRY_AFTER_S = 5


def check_uid(value: str, what: str) -> str:
    """A UID from the URL, validated by the one UID rule (:func:`dicomflow.dicom.derived.uid_problem`)
    before it reaches SQL or a path.

    Raises:
        HTTPException: 400 naming the path segment and what is wrong with it.
    """
    problem = uid_problem(value)
    if problem is not None:
        raise HTTPException(400, f"{what} {value[:80]!r} is not a UID: {problem}")
    return value


@dataclass
class WebContext:
    """Per-process state shared by the routes."""

    settings: Settings
    auth: Authenticator
    metrics: WebMetrics
    db: Database
    publisher: Publisher | None = None
    auditor: AuditSender | None = None
    store: BlobStore = field(init=False)
    _root: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self._root = os.path.realpath(self.settings.storage.root)
        self.store = open_store(self.settings.storage, fsync=self.settings.ingest.fsync)

    @property
    def pool(self) -> AsyncConnectionPool[Any]:
        """The database's pool (prefer ``db.connection()``: it turns an outage into a 503)."""
        return self.db.pool

    @property
    def storage_root(self) -> Path:
        """The local folder of the web's caches (on ``s3`` a local scratch: no instance is read from it)."""
        return Path(self._root)

    async def principal(self, request: Request, access: Access) -> Principal:
        """The authenticated caller (raises 401 / 403)."""
        return await self.auth.authenticate(request, access)

    def locate(self, file_path: str) -> Blob:
        """The object an index row names: its key, and on the filesystem its checked real path.

        On ``s3`` the location is only validated (``store.key_of``); the
        object's presence is learnt from the read (404 there, see
        :func:`blob_errors`). On the filesystem the file is opened and its
        real path read back from ``/proc/self/fd`` (open, readlink, fstat,
        close), which costs a fraction of ``os.path.realpath``'s lstat of
        every path component; symbolic links are followed before the check,
        so no link can lead outside the root.

        Raises:
            HTTPException: 500 when the index points outside the store, 404 when the file is gone,
                503 when it cannot be opened for another reason or the storage root itself is gone.
        """
        with blob_errors(file_path):
            key = self.store.key_of(file_path if self.store.backend == "s3" or os.path.isabs(file_path)
                                    else os.path.join(self._root, file_path))
        if self.store.backend == "s3":
            return Blob(key, None)
        root = self._root
        real, regular, error = _real_path(self.store.location(key))
        if real is not None and not real.startswith(root.rstrip(os.sep) + os.sep):
            log.error("indexed file %s resolves outside the storage root %s; not served", file_path, root)
            raise HTTPException(500, "an indexed file lies outside the storage root")
        if real is None and (error not in _MISSING or not os.path.isdir(root)):
            problem = (f"cannot open ({os.strerror(error)})" if error not in _MISSING
                       else f"the storage root {root} is missing (not mounted?)")
            with blob_errors(file_path):
                raise BlobUnavailable(file_path, problem)
        if real is None or not regular:
            log.error("indexed file %s is missing", file_path)
            raise HTTPException(404, "the instance's file is missing from storage")
        return Blob(key, Path(real))

    def audit(self, events: list[AuditEvent]) -> None:
        """Queue audit events for the background sender (observer: never blocks, never fails the request)."""
        if self.auditor is not None and events:
            self.auditor.submit(events)


_PROC_FD = os.path.isdir("/proc/self/fd")


#: The errors of opening a file that mean it is not there (anything else: the storage cannot be read).
_MISSING = frozenset({0, errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def _real_path(candidate: str) -> tuple[str | None, bool, int]:
    """(real path, is a regular file, 0) of ``candidate``; (None, False, errno) when it cannot be opened."""
    if not _PROC_FD:
        real = os.path.realpath(candidate)
        return (real, os.path.isfile(real), 0) if os.path.exists(real) else (None, False, errno.ENOENT)
    try:
        # O_NONBLOCK: opening a FIFO someone put in the storage must not hang the event loop.
        fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return None, False, exc.errno or 0
    try:
        return os.readlink(f"/proc/self/fd/{fd}"), stat.S_ISREG(os.fstat(fd).st_mode), 0
    finally:
        os.close(fd)


@contextmanager
def blob_errors(where: str) -> Iterator[None]:
    """The storage layer's errors as HTTP statuses: outside the store 500, missing 404, unavailable 503.

    A file that is there but no DICOM any more (truncated, overwritten) is 500 with that reason, logged
    as one line: no request could make it readable.
    """
    try:
        yield
    except BlobLocationError as exc:
        log.error("indexed location %s is outside the store: %s; not served", where, exc.problem)
        raise HTTPException(500, "an indexed file lies outside the storage root") from exc
    except BlobNotFound as exc:
        log.error("indexed object %s is missing", where)
        raise HTTPException(404, "the instance's file is missing from storage") from exc
    except BlobUnavailable as exc:
        log.warning("object store unavailable reading %s: %s", where, exc.problem)
        raise HTTPException(503, "the storage is unavailable; retry later",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from exc
    except (InvalidDicomError, EOFError) as exc:
        log.error("indexed object %s is not readable DICOM: %s", where, first_line(exc))
        raise HTTPException(500, "the instance's stored file is not readable DICOM") from exc


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


def base_url(request: Request) -> str:
    """``scheme://host[:port]`` the client used (for RetrieveURL and BulkDataURI)."""
    return str(request.base_url).rstrip("/")


__all__ = ["RETRY_AFTER_S", "WebContext", "base_url", "blob_errors", "check_uid", "client_address"]
