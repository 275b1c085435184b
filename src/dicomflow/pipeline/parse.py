"""Turning a batch of store events into records, on every core.

Each record of a batch becomes either a :class:`~dicomflow.pipeline.types.Parsed`
(the store event plus the series-state and instance records extracted from
its file) or a :class:`~dicomflow.pipeline.types.Poison` (why it can never be
processed), in the batch's order.

Work split:

- the consuming process decodes the JSON (msgspec: microseconds per event);
- a process pool does the file work per event (:mod:`.parse_worker`): resolve
  ``file_path`` inside the storage root (following symlinks, so neither ``..``
  nor a link can lead outside it), check it is a file, and extract the header
  with :func:`dicomflow.extract.header.extract_file`.

The pool uses the ``spawn`` start method: the consuming process runs
librdkafka and psycopg threads, and forking a threaded process can deadlock
the child. Worker processes are started once and reused for every batch.

A worker that dies (a segfault in a decoder, the OOM killer) breaks the pool;
the batch is then parsed again one file per task in a fresh pool, and the
file that kills its worker again is dead-lettered as ``parser-crashed``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from dicomflow.errors import DicomflowError, WireFormatError
from dicomflow.kafka.records import Record
from dicomflow.models import DicomStoreMeta, decode
from dicomflow.pipeline.batch import Batch
from dicomflow.pipeline.parse_worker import (
    PARSER_CRASHED,
    WIRE_FORMAT,
    Outcome,
    Task,
    decode_outcomes,
    parse_chunk,
    warm_up,
    worker_init,
)
from dicomflow.pipeline.types import Item, Parsed, ParsedBatch, Poison
from dicomflow.settings import StorageSettings

log = logging.getLogger(__name__)


class StorageReadError(DicomflowError):
    """The storage could not be read (I/O error, not a bad file): retry the batch, never dead-letter.

    Why: an NFS hiccup or a full file table would otherwise send a whole
    stream of good instances to the dead-letter topic.
    """

    poison = False


class Parser:
    """Decodes store events and extracts their files on a pool of worker processes."""

    def __init__(self, root: Path | StorageSettings, workers: int = 0) -> None:
        #: What the workers read from: the storage root, or an object store's settings (``backend = "s3"``).
        self.root: str | StorageSettings
        if isinstance(root, StorageSettings):
            self.root = root if root.backend != "filesystem" else str(root.root)
        else:
            self.root = str(root)
        self.workers = workers if workers > 0 else (os.cpu_count() or 1)
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (they take a moment to import pydicom), not at the first batch."""
        pool = self._ensure_pool()
        for f in [pool.submit(warm_up) for _ in range(self.workers)]:
            f.result()

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=worker_init
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
        pending: list[tuple[int, DicomStoreMeta, Task]] = []
        for i, record in enumerate(batch.records):
            decoded = decode_event(record)
            if isinstance(decoded, Poison):
                items[i] = decoded
                continue
            task = Task(decoded.file_path, decoded.tenant_id, decoded.created_time,
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

    def _run(self, tasks: list[Task]) -> list[Outcome]:
        """Chunks across the pool; on a broken pool, isolate the culprit file by file."""
        try:
            return self._run_chunks(tasks)
        except BrokenProcessPool:
            log.error("a parse worker died; parsing the batch again one file per task to find the culprit")
            self._reset_pool()
        return [self._run_alone(task) for task in tasks]

    def _run_alone(self, task: Task, attempts: int = 2) -> Outcome:
        """One file in its own task; a file that kills a fresh worker ``attempts`` times is poison."""
        for _ in range(attempts):
            try:
                return decode_outcomes(self._ensure_pool().submit(parse_chunk, self.root, [task]).result())[0]
            except BrokenProcessPool:
                self._reset_pool()
        log.error("parse worker died %s times on %s; dead-lettering it", attempts, task.file_path)
        return Outcome(error_class=PARSER_CRASHED, reason=f"{task.file_path}: the parser process died reading this file")

    def _run_chunks(self, tasks: list[Task]) -> list[Outcome]:
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


__all__ = ["Parser", "StorageReadError", "decode_event"]
