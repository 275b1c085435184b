"""Turning a batch of store events into records, on every core.

Each record of a batch becomes either a :class:`Parsed` (the store event plus
the series-state and instance records extracted from its file) or a
:class:`Poison` (why it can never be processed), in the batch's order.

Work split:

- the consuming process decodes the JSON (msgspec: microseconds per event);
- a process pool does the file work per event: resolve ``file_path`` inside
  the storage root (following symlinks, so neither ``..`` nor a link can
  lead outside it), check it is a file, and extract the header with
  :func:`dicomflow.extract.header.extract_file`.

The pool uses the ``spawn`` start method: the consuming process runs
librdkafka and psycopg threads, and forking a threaded process can deadlock
the child. Worker processes are started once and reused for every batch.

A worker that dies (a segfault in a decoder, the OOM killer) breaks the pool;
the batch is then parsed again one file per task in a fresh pool, and the
file that kills its worker again is dead-lettered as ``parser-crashed``.
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import os
import time
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import msgspec

from dicomflow.errors import DicomflowError, ExtractError, PoisonMessageError, WireFormatError
from dicomflow.kafka.consumer import TP, Record
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta, decode
from dicomflow.pipeline.batch import Batch, next_offsets

log = logging.getLogger(__name__)

#: DLQ error classes decided here (the ``dicomflow.error.class`` header).
WIRE_FORMAT = "wire-format"
FILE_MISSING = "file-missing"
OUTSIDE_ROOT = "outside-storage-root"
UNREADABLE_DICOM = "unreadable-dicom"
UID_MISMATCH = "uid-mismatch"
PARSER_CRASHED = "parser-crashed"
#: Not a DLQ class: the batch is retried (see :class:`StorageReadError`).
STORAGE_UNAVAILABLE = "storage-unavailable"


class StorageReadError(DicomflowError):
    """The storage could not be read (I/O error, not a bad file): retry the batch, never dead-letter.

    Why: an NFS hiccup or a full file table would otherwise send a whole
    stream of good instances to the dead-letter topic.
    """

    poison = False


@dataclass(frozen=True, slots=True)
class Parsed:
    """A store event whose file was found and read."""

    record: Record
    event: DicomStoreMeta
    state: DicomStateMeta
    image: DicomImageMeta


@dataclass(frozen=True, slots=True)
class Poison:
    """A record that can never be processed, and why (it goes to the DLQ).

    ``event`` is the decoded store event when the JSON was valid (it gives
    the audit event its tenant, study and file).
    """

    record: Record
    error_class: str
    reason: str
    event: DicomStoreMeta | None = None


Item = Parsed | Poison


@dataclass
class ParsedBatch:
    """A batch after parsing: one item per record, in the batch's order."""

    items: list[Item]
    #: Monotonic time the batch window opened.
    started: float
    #: Seconds spent parsing (for the parse-time histogram).
    parse_s: float = 0.0
    _offsets: dict[TP, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self._offsets:
            self._offsets = next_offsets(i.record for i in self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def good(self) -> list[Parsed]:
        """The items to persist and publish."""
        return [i for i in self.items if isinstance(i, Parsed)]

    @property
    def poison(self) -> list[Poison]:
        """The items to dead-letter."""
        return [i for i in self.items if isinstance(i, Poison)]

    def offsets(self) -> dict[TP, int]:
        """The offsets to commit once this batch is done (partitions still held only)."""
        return dict(self._offsets)

    def partitions(self) -> set[TP]:
        """The partitions this batch holds records of."""
        return set(self._offsets)

    def drop_partitions(self, partitions: Collection[TP]) -> int:
        """Forget revoked partitions: their items and their offsets; returns items dropped."""
        before = len(self.items)
        self.items = [i for i in self.items if i.record.tp not in partitions]
        for tp in partitions:
            self._offsets.pop(tp, None)
        return before - len(self.items)


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


class _Task(NamedTuple):
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


def check_uids(task: _Task, image: DicomImageMeta) -> None:
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


def parse_task(root: str, task: _Task) -> Outcome:
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


def parse_chunk(root: str, tasks: Sequence[_Task]) -> bytes:
    """Parse several tasks in one worker round trip; the outcomes as msgpack."""
    return _outcome_encoder.encode([parse_task(root, t) for t in tasks])


def decode_outcomes(payload: bytes) -> list[Outcome]:
    """The outcomes a worker sent back."""
    return _outcomes_decoder.decode(payload)


def _worker_init() -> None:
    """Make workers ignore SIGINT and SIGTERM.

    A signal to the whole process group (Ctrl-C, a service manager) must stop
    only the consuming process, which finishes its batch and then shuts the
    pool down; a worker killed by it would break the pool mid-batch. A worker
    whose parent died exits when its task pipe closes.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _warm_up() -> int:
    """Import the extractor in the worker so the first batch does not pay for it."""
    import dicomflow.extract.header  # noqa: F401

    return os.getpid()


# --------------------------------------------------------------------------- parser


class Parser:
    """Decodes store events and extracts their files on a pool of worker processes."""

    def __init__(self, root: Path, workers: int = 0) -> None:
        self.root = str(root)
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (they take a moment to import pydicom), not at the first batch."""
        pool = self._ensure_pool()
        for f in [pool.submit(_warm_up) for _ in range(self.workers)]:
            f.result()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init
            )
        return self._pool

    def _reset_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def parse(self, batch: Batch) -> ParsedBatch:
        """One item per record of ``batch``, in order; poison never raises.

        Raises:
            StorageReadError: a file could not be read for a reason that is not the file's fault.
        """
        t0 = time.perf_counter()
        items: list[Item | None] = [None] * len(batch.records)
        pending: list[tuple[int, DicomStoreMeta, _Task]] = []
        for i, record in enumerate(batch.records):
            decoded = decode_event(record)
            if isinstance(decoded, Poison):
                items[i] = decoded
                continue
            task = _Task(decoded.file_path, decoded.tenant_id, decoded.created_time,
                         decoded.study_uid, decoded.series_uid, decoded.sop_uid)
            pending.append((i, decoded, task))
        outcomes = self._run([t for _, _, t in pending]) if pending else []
        for outcome in outcomes:
            if outcome.transient:
                raise StorageReadError(outcome.reason)
        for (i, event, _task), outcome in zip(pending, outcomes, strict=True):
            record = batch.records[i]
            if outcome.state is not None and outcome.image is not None:
                items[i] = Parsed(record, event, outcome.state, outcome.image)
            else:
                items[i] = Poison(record, outcome.error_class, outcome.reason, event)
        done = [item for item in items if item is not None]
        return ParsedBatch(done, batch.started, time.perf_counter() - t0, batch.offsets())

    def _run(self, tasks: list[_Task]) -> list[Outcome]:
        """Chunks across the pool; on a broken pool, isolate the culprit file by file."""
        try:
            return self._run_chunks(tasks)
        except BrokenProcessPool:
            log.error("a parse worker died; parsing the batch again one file per task to find the culprit")
            self._reset_pool()
        return [self._run_alone(task) for task in tasks]

    def _run_alone(self, task: _Task, attempts: int = 2) -> Outcome:
        """One file in its own task; a file that kills a fresh worker ``attempts`` times is poison."""
        for _ in range(attempts):
            try:
                return decode_outcomes(self._ensure_pool().submit(parse_chunk, self.root, [task]).result())[0]
            except BrokenProcessPool:
                self._reset_pool()
        log.error("parse worker died %s times on %s; dead-lettering it", attempts, task.file_path)
        return Outcome(error_class=PARSER_CRASHED, reason=f"{task.file_path}: the parser process died reading this file")

    def _run_chunks(self, tasks: list[_Task]) -> list[Outcome]:
        pool = self._ensure_pool()
        # Two chunks per worker: an uneven chunk (big files) does not leave a core idle.
        n_chunks = min(len(tasks), self.workers * 2)
        size = -(-len(tasks) // n_chunks)
        futures: list[Future[bytes]] = [
            pool.submit(parse_chunk, self.root, tasks[i : i + size]) for i in range(0, len(tasks), size)
        ]
        out: list[Outcome] = []
        for f in futures:
            out.extend(decode_outcomes(f.result()))
        return out

    def close(self) -> None:
        """Stop the worker processes."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def decode_event(record: Record) -> DicomStoreMeta | Poison:
    """The store event in ``record``, or a ``wire-format`` poison naming the problem."""
    if not record.value:
        return Poison(record, WIRE_FORMAT, "empty message (no payload)")
    try:
        return decode(record.value, DicomStoreMeta)
    except WireFormatError as exc:
        return Poison(record, WIRE_FORMAT, str(exc))


__all__ = [
    "FILE_MISSING",
    "OUTSIDE_ROOT",
    "PARSER_CRASHED",
    "UID_MISMATCH",
    "UNREADABLE_DICOM",
    "WIRE_FORMAT",
    "Item",
    "ParsedBatch",
    "Parsed",
    "Parser",
    "Poison",
    "check_uids",
    "decode_event",
    "Outcome",
    "decode_outcomes",
    "parse_chunk",
    "parse_task",
    "resolve_in_root",
]
