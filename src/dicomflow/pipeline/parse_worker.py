"""The worker side of parsing: what runs in the parse processes, one store event's file at a time.

For each event: resolve ``file_path`` inside the storage root (following
symlinks, so neither ``..`` nor a link can lead outside it), check it is a
file, extract the header with :func:`dicomflow.extract.header.extract_file`
and check the file holds the instance the event names. Everything the file
can do wrong becomes an :class:`Outcome` with its dead-letter class, never an
exception. The consuming side (the pool, :mod:`.parse`) sends the tasks.

This module imports no Kafka client and nothing of the consuming side: every
worker process imports it (a test checks that confluent_kafka stays out).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from dicomflow.errors import ExtractError, PoisonMessageError
from dicomflow.models import DicomImageMeta, DicomStateMeta
from dicomflow.settings import StorageSettings

if TYPE_CHECKING:
    from dicomflow.blobs import BlobStore

#: DLQ error classes decided here (the ``dicomflow.error.class`` header).
WIRE_FORMAT = "wire-format"
FILE_MISSING = "file-missing"
OUTSIDE_ROOT = "outside-storage-root"
UNREADABLE_DICOM = "unreadable-dicom"
UID_MISMATCH = "uid-mismatch"
PARSER_CRASHED = "parser-crashed"
#: Not a DLQ class: the batch is retried (see :class:`dicomflow.pipeline.parse.StorageReadError`).
STORAGE_UNAVAILABLE = "storage-unavailable"


class Outcome(msgspec.Struct, array_like=True, kw_only=True):
    """What a worker sends back per task: the two records, or why the file is poison.

    Sent as msgpack rather than pickled objects: encoding in the worker and
    decoding (with validation) in the consuming process take about half the
    time, and the consuming process is the pipeline's serial part.
    """

    state: DicomStateMeta | None = None
    image: DicomImageMeta | None = None
    error_class: str = ""
    reason: str = ""
    #: The storage could not be read for now (EIO, stale NFS handle ...): retry, do not dead-letter.
    transient: bool = False


_outcome_encoder = msgspec.msgpack.Encoder()
_outcomes_decoder = msgspec.msgpack.Decoder(list[Outcome])


class Task(NamedTuple):
    """The file work for one event, sent to a worker (small, cheap to pickle)."""

    file_path: str
    tenant_id: str
    received: dt.datetime
    study_uid: str
    series_uid: str
    sop_uid: str


# --------------------------------------------------------------------------- storage root


def resolve_in_root(root: str | os.PathLike[str], file_path: str) -> Path:
    """The real path of ``file_path``, guaranteed to be a file inside ``root``.

    A relative ``file_path`` is taken relative to the root. Symlinks and ``..``
    are resolved *before* the check, so ``root/../etc/passwd`` and a link
    inside the root pointing outside it are both rejected. The caller opens
    the returned real path, not the original one.

    Raises:
        PoisonMessageError: ``outside-storage-root`` or ``file-missing``.
    """
    if not file_path or "\x00" in file_path:
        raise PoisonMessageError(OUTSIDE_ROOT, f"file_path {file_path!r} is not a usable path")
    real_root = os.path.realpath(root)
    candidate = file_path if os.path.isabs(file_path) else os.path.join(real_root, file_path)
    resolved = os.path.realpath(candidate)
    if resolved != real_root and not resolved.startswith(real_root.rstrip(os.sep) + os.sep):
        raise PoisonMessageError(OUTSIDE_ROOT, f"{file_path} resolves to {resolved}, outside the storage root {real_root}")
    if not os.path.isfile(resolved):
        raise PoisonMessageError(FILE_MISSING, f"{file_path}: no such file under the storage root")
    return Path(resolved)


def check_uids(task: Task, image: DicomImageMeta) -> None:
    """The file must hold the instance the event names (else rows would not join).

    Raises:
        PoisonMessageError: ``uid-mismatch`` naming the first differing UID.
    """
    for name, said, found in (
        ("StudyInstanceUID", task.study_uid, image.study_uid),
        ("SeriesInstanceUID", task.series_uid, image.series_uid),
        ("SOPInstanceUID", task.sop_uid, image.sop_uid),
    ):
        if said != found:
            raise PoisonMessageError(UID_MISMATCH, f"{task.file_path}: event says {name} {said!r}, file has {found!r}")


# --------------------------------------------------------------------------- worker side


def parse_task(root: str, task: Task) -> Outcome:
    """Resolve, read and check one event's file; poison becomes an outcome with its class and reason.

    Runs in a worker process. Never raises for bad input: everything the
    file can do wrong is an outcome, so one bad file cannot fail its chunk.
    """
    from dicomflow.extract.header import extract_file

    try:
        path = resolve_in_root(root, task.file_path)
        state, image = extract_file(path, task.tenant_id, received=task.received)
        check_uids(task, image)
        return Outcome(state=state, image=image)
    except PoisonMessageError as exc:
        return Outcome(error_class=exc.error_class, reason=exc.reason)
    except ExtractError as exc:
        return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {exc.reason}")
    except PermissionError as exc:  # a property of this file: an operator must act
        return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {type(exc).__name__}: {exc}")
    except OSError as exc:
        if exc.errno is None:  # pydicom's "No tag to read at file position ...": the file's bytes
            return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {type(exc).__name__}: {exc}")
        # The storage itself failed (EIO, ESTALE, EMFILE): the file may be fine.
        return Outcome(error_class=STORAGE_UNAVAILABLE, reason=f"{task.file_path}: {type(exc).__name__}: {exc}",
                       transient=True)
    except ValueError as exc:  # a bad value the extractor let through
        return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {type(exc).__name__}: {exc}")


def parse_chunk(root: str | StorageSettings, tasks: Sequence[Task]) -> bytes:
    """Parse several tasks in one worker round trip; the outcomes as msgpack.

    ``root``: the storage root (filesystem backend), or the storage settings
    of an object store, whose objects are read by ranged GETs, the chunk's
    tasks :data:`FETCH_THREADS` at a time (the client releases the GIL while
    it waits, so the round trips overlap and the parsing does not wait for them).
    """
    if isinstance(root, str):
        return _outcome_encoder.encode([parse_task(root, t) for t in tasks])
    store = _store_of(root)
    if len(tasks) == 1:
        return _outcome_encoder.encode([parse_blob_task(store, tasks[0])])
    heads = _fetch_heads(store, tasks)
    return _outcome_encoder.encode([parse_blob_task(store, t, heads[i]) for i, t in enumerate(tasks)])


#: Ranged GETs of one chunk in flight at once (per worker process).
FETCH_THREADS = 16

_stores: dict[StorageSettings, BlobStore] = {}
_fetchers: list[ThreadPoolExecutor] = []


def _fetch_heads(store: BlobStore, tasks: Sequence[Task]) -> list[tuple[bytes, int] | BaseException]:
    """The first ranged read of each task's object, :data:`FETCH_THREADS` at a time (or what it raised).

    Only the GETs run on the threads (the client releases the GIL while it
    waits); the parsing then runs in this thread, not contending for the GIL.
    """
    from dicomflow.blobs.errors import BlobError
    from dicomflow.extract.header import fetch_head

    def head(task: Task) -> tuple[bytes, int] | BaseException:
        try:
            return fetch_head(store, store.key_of(task.file_path))
        except BlobError as exc:  # raised again, and judged, where the task is parsed
            return exc

    if not _fetchers:  # one pool per worker process, its threads kept between chunks
        _fetchers.append(ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="parse-fetch"))
    return list(_fetchers[0].map(head, tasks))


def _store_of(settings: StorageSettings) -> BlobStore:
    """The worker's store for these settings, opened at its first chunk (one client per process)."""
    store = _stores.get(settings)
    if store is None:
        from dicomflow.blobs import open_store

        store = _stores[settings] = open_store(settings)
    return store


def parse_blob_task(store: BlobStore, task: Task, head: tuple[bytes, int] | BaseException | None = None) -> Outcome:
    """:func:`parse_task` for an object of the storage layer: the location checked, the header by ranged reads.

    ``head``: the object's first ranged read, fetched already (or what fetching it raised).
    """
    from dicomflow.blobs.errors import BlobError, BlobLocationError, BlobNotFound
    from dicomflow.extract.header import extract_blob

    try:
        key = store.key_of(task.file_path)
        if isinstance(head, BaseException):
            raise head
        state, image = extract_blob(store, key, task.tenant_id, received=task.received, head=head)
        check_uids(task, image)
        return Outcome(state=state, image=image)
    except PoisonMessageError as exc:
        return Outcome(error_class=exc.error_class, reason=exc.reason)
    except ExtractError as exc:
        return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {exc.reason}")
    except BlobLocationError as exc:
        return Outcome(error_class=OUTSIDE_ROOT, reason=f"file_path {task.file_path!r}: {exc.problem}")
    except BlobNotFound as exc:
        return Outcome(error_class=FILE_MISSING, reason=f"{exc.where}: {exc.problem}")
    except BlobError as exc:  # unavailable, access denied: the object may be fine
        return Outcome(error_class=STORAGE_UNAVAILABLE, reason=str(exc), transient=True)
    except ValueError as exc:  # a bad value the extractor let through
        return Outcome(error_class=UNREADABLE_DICOM, reason=f"{task.file_path}: {type(exc).__name__}: {exc}")


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """The outcomes a worker sent back."""
    return _outcomes_decoder.decode(payload)


def worker_init() -> None:
    """Make workers ignore SIGINT and SIGTERM.

    A signal to the whole process group (Ctrl-C, a service manager) must stop
    only the consuming process, which finishes its batch and then shuts the
    pool down; a worker killed by it would break the pool mid-batch. A worker
    whose parent died exits when its task pipe closes.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def warm_up() -> int:
    """Import the extractor in the worker so the first batch does not pay for it."""
    import dicomflow.extract.header  # noqa: F401

    return os.getpid()


__all__ = [
    "FILE_MISSING",
    "OUTSIDE_ROOT",
    "PARSER_CRASHED",
    "STORAGE_UNAVAILABLE",
    "UID_MISMATCH",
    "UNREADABLE_DICOM",
    "WIRE_FORMAT",
    "Outcome",
    "Task",
    "check_uids",
    "decode_outcomes",
    "parse_blob_task",
    "parse_chunk",
    "parse_task",
    "resolve_in_root",
    "warm_up",
    "worker_init",
]
