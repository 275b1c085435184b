"""The receiver's durable local journal (``receiver.ack = "journal"``): Success before Kafka acknowledges.

With ``receiver.ack = "kafka"`` (the default) a C-STORE is answered Success
once its file is durable *and* Kafka acknowledged its store event. With
``"journal"`` it is answered once the file, its folder entry and a record
of its store event in this journal are durable; the event (and its receipt
on log_queue) then goes to Kafka from the journal, at least once, on a
thread of its own (:mod:`~dicomflow.ingest.journal_publish`). The promise
to the sender is the same: nothing answered Success is lost, whatever is
killed when; Kafka being slow or down no longer delays (or refuses) the
answers, until the backlog reaches :data:`MAX_UNPUBLISHED`.

**Group commit, leader and followers.** Every association thread hands its
record and the folder of its new file to :meth:`Journal.commit`. When no
commit is under way it leads one itself: it takes everything queued (its own
record first), writes all of it with one ``pwrite``, syncs (one ``syncfs``
of the file system, or one ``fdatasync`` of the segment with one ``fsync``
per distinct folder on a small pool), wakes the waiters and returns.
Records that arrive meanwhile wait; when the commit ends, one of their
threads leads the next. At four associations one sync serves all the
instances that arrived during the previous one, instead of queueing three
syncs per instance on one disk; at one association the thread commits its
own record with no hand-over to another thread (a dedicated committer
thread cost two thread wake-ups, 0.66 ms of the 2.0 ms the journal stage
took per instance on one association, bench_receiver.py --rows breakdown,
2026-12-08). Each waiter still returns only after *its* record, and *its*
file's folder, were synced after it was written.

**Files.** Records go into preallocated, locked segment files under
``{storage root}/.journal/`` (:mod:`~dicomflow.ingest.journal_segment`); a
segment is removed once it is full and Kafka acknowledged every record in
it (or at a clean stop). A segment left by a process that died (its lock is
free) is replayed at the next start of any receiver process on that
storage root, before its engine accepts an association: its records are
handed to the background publisher, which removes the segment once all of
them are acknowledged.

**Duplicates.** The ``.unacknowledged`` mark (:mod:`~dicomflow.ingest.duplicates`)
is still made before the file gets its name; it is removed once the
journal record is durable, which is what the mark waited for: from then on
the record, not the sender's retry, makes sure the event goes out.

What can go wrong: a write or sync of the journal or of the folder fails
(:class:`JournalWriteError`, answered out of resources: the sender retries);
too many events not yet acknowledged by Kafka (:class:`JournalFullError`,
out of resources too). Raised only to the caller of :meth:`Journal.commit`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.ingest.exceptions import JournalFullError, JournalWriteError, StorageWriteError
from dicomflow.ingest.journal_publish import Entry, JournalPublisher
from dicomflow.ingest.journal_recover import orphaned_events
from dicomflow.ingest.journal_segment import HAVE_SYNCFS, Segment, create_segment, encode_record
from dicomflow.ingest.storage import fsync_folder, sync_folder_durably
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta, encode

log = logging.getLogger(__name__)

#: The journal's folder under the storage root (the S3 backend's spool).
JOURNAL = ".journal"
#: Store events written and not yet acknowledged by Kafka past which new ones are refused (about 30 MB).
MAX_UNPUBLISHED = 20000


@dataclass(frozen=True, slots=True)
class CommitTimes:
    """What one group commit cost (nanoseconds), for the stage timings."""

    #: fdatasync of the segment.
    journal_sync_ns: int
    #: fsync of the file's folder (beside the journal sync).
    folder_sync_ns: int
    #: Records made durable by the same sync (1: no grouping happened).
    group: int


@dataclass(eq=False)
class _Request:
    record: bytes
    event: DicomStoreMeta
    folder: Path | None
    #: The file's data and name are made durable by the commit's syncfs.
    covered: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    error: OSError | StorageWriteError | None = None
    times: CommitTimes | None = None


class Journal:
    """The journal of one receiver process (see the module documentation).

    Raises:
        OSError: (constructor) the folder cannot be created or listed.
    """

    def __init__(self, folder: Path, publisher: Publisher, *, fsync: bool, publish_timeout_s: float,
                 sync_file_system: bool = True) -> None:
        self.folder = folder
        self.fsync = fsync
        folder.mkdir(parents=True, exist_ok=True)
        #: One syncfs per group commit covers the instance files too (see :meth:`covers`).
        self.sync_file_system = fsync and sync_file_system and HAVE_SYNCFS
        self._device = os.stat(folder).st_dev
        self._lock = threading.Condition()
        self._queue: list[_Request] = []
        self._segments: set[Segment] = set()
        self._current: Segment | None = None
        self._unpublished = 0
        self._seq = 0
        self._closing = False
        #: A thread is running a commit (the leader); the others' records wait in the queue.
        self._leading = False
        self._folder_syncs = ThreadPoolExecutor(max_workers=4, thread_name_prefix="dicomflow-journal-fsync")
        self._tidying = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicomflow-journal-tidy")
        self._publisher = JournalPublisher(publisher, timeout_s=publish_timeout_s, on_published=self._published)
        #: Store events found in orphaned segments at start-up (handed to the publisher).
        self.replayed = self._recover()

    # ------------------------------------------------------------------ the association threads' side

    def covers(self, folder: Path) -> bool:
        """True when :meth:`commit` with ``covered`` makes a file in ``folder`` durable too (its data unsynced).

        With ``sync_file_system`` the commit's one sync is a ``syncfs`` of the
        journal's file system: the data, names and journal records of every
        instance of the group at once, instead of an fdatasync per file, an
        fsync per folder and one of the journal. Only for a folder on that
        same file system (the storage root spans no other, usually).
        """
        if not self.sync_file_system:
            return False
        try:
            return os.stat(folder).st_dev == self._device
        except OSError:
            return False

    def commit(self, event: DicomStoreMeta, folder: Path | None, *, covered: bool = False) -> CommitTimes:
        """Make ``event`` durable in the journal and ``folder`` (None: nothing to sync) durable; then return.

        ``covered`` (only when :meth:`covers` said so for ``folder``): the
        file's data is not synced yet; the commit makes it durable with the rest.

        Raises:
            JournalFullError: :data:`MAX_UNPUBLISHED` events wait for Kafka already.
            JournalWriteError: the record or the folder could not be synced,
                or the journal is closed.
        """
        request = _Request(encode_record(encode(event)), event, folder, covered and self.sync_file_system)
        with self._lock:
            if self._closing:
                raise JournalWriteError("the receiver is stopping", sop_uid=event.sop_uid)
            if self._unpublished >= MAX_UNPUBLISHED:
                raise JournalFullError(f"{self._unpublished} store events wait for Kafka (receiver journal full)",
                                       sop_uid=event.sop_uid)
            self._unpublished += 1
            self._queue.append(request)
            while not request.done.is_set():
                if self._leading:
                    self._lock.wait()
                    continue
                self._leading = True
                batch, self._queue = self._queue, []
                self._lock.release()
                try:
                    self._commit_safely(batch)
                finally:
                    self._lock.acquire()
                    self._leading = False
                    self._lock.notify_all()  # the followers: done, or one of them leads the next commit
        if request.error is not None:
            error = request.error
            if isinstance(error, StorageWriteError):
                raise JournalWriteError(error.reason, sop_uid=event.sop_uid) from error
            raise JournalWriteError(f"cannot write the journal ({error.strerror or error}): {self.folder}",
                                    sop_uid=event.sop_uid) from error
        assert request.times is not None
        return request.times

    def tidy(self, work: Callable[[], None]) -> None:
        """Run ``work`` soon on a thread of its own: what may follow a commit but need not delay the answer.

        The ``.unacknowledged`` mark's removal is such work: once the record is
        durable the mark is no longer needed, and a mark left by a crash only
        makes an identical resend publish its (idempotent) event again.
        Failures are logged; ``close`` waits for what was handed over.
        """
        def run() -> None:
            try:
                work()
            except Exception:  # an observer: the instance is durable and answered
                log.exception("journal: tidying after a commit failed")

        self._tidying.submit(run)

    def backlog(self) -> int:
        """Store events durable here and not yet acknowledged by Kafka."""
        with self._lock:
            return self._unpublished

    def close(self, timeout_s: float = 10.0) -> None:
        """Refuse new records, sync what is queued, let Kafka acknowledge (``timeout_s``), remove what is done.

        What Kafka did not acknowledge in time stays on disk and is replayed at the next start.
        """
        with self._lock:
            if self._closing:
                return
            self._closing = True
            while self._leading or self._queue:  # what was queued before is committed by its own threads
                self._lock.wait()
        drained = self._publisher.drain(timeout_s)
        self._publisher.close()
        self._folder_syncs.shutdown(wait=True)
        self._tidying.shutdown(wait=True)
        with self._lock:
            segments, self._segments = list(self._segments), set()
            left = self._unpublished
        for segment in segments:
            if segment.outstanding == 0 and not segment.failed:
                segment.remove()
            else:
                segment.close()
        if not drained:
            log.warning("journal: %d store event(s) not acknowledged by Kafka yet; they stay in %s for the next start",
                        left, self.folder)

    # ------------------------------------------------------------------ the leader's side

    def _commit_safely(self, batch: list[_Request]) -> None:
        """:meth:`_commit`, never leaving a waiter of ``batch`` hanging (the next leader goes on)."""
        try:
            self._commit(batch)
        except Exception as exc:
            log.exception("journal: a group commit failed")
            self._retire_current()
            with self._lock:
                for request in batch:
                    if not request.done.is_set():
                        request.error = OSError(f"journal committer: {type(exc).__name__}: {exc}")
                        self._unpublished -= 1
                        request.done.set()

    def _commit(self, batch: list[_Request]) -> None:
        """Write, sync (journal and folders together), publish later, wake the waiters."""
        folders: dict[Path, Future[int]] = {}
        if self.fsync:
            for request in batch:
                if request.folder is not None and not request.covered and request.folder not in folders:
                    folders[request.folder] = self._folder_syncs.submit(_sync_folder_timed, request.folder)
        written: list[tuple[_Request, Segment]] = []
        error: OSError | None = None
        sync_ns = 0
        try:
            touched: list[Segment] = []
            for request in batch:
                segment = self._segment_for(request.record)
                segment.append(request.record)
                written.append((request, segment))
                if not touched or touched[-1] is not segment:
                    touched.append(segment)
            started = time.perf_counter_ns()
            if self.fsync and any(r.covered for r in batch):
                touched[-1].sync(whole_file_system=True)  # every segment, file and name of the group
            elif self.fsync:
                for segment in touched:
                    segment.sync()
            sync_ns = time.perf_counter_ns() - started
        except OSError as exc:
            log.error("journal: cannot write or sync %s: %s", self.folder, exc.strerror or exc)
            error = exc
            self._retire_current()
        folder_errors: dict[Path, StorageWriteError] = {}
        folder_ns: dict[Path, int] = {}
        for path, future in folders.items():
            try:
                folder_ns[path] = future.result()
            except StorageWriteError as exc:
                folder_errors[path] = exc
        entries: list[Entry] = []
        with self._lock:
            for request, segment in written:
                failure = error or (folder_errors.get(request.folder) if request.folder is not None else None)
                if failure is None:
                    segment.outstanding += 1
                    entries.append(Entry(request.event, segment))
                else:
                    request.error = failure
            failed = len(batch) - len(entries)
            self._unpublished -= failed
        for request in batch[len(written):]:
            request.error = request.error or error or OSError("not written")
        for request in batch:
            folder_sync = folder_ns.get(request.folder, 0) if request.folder and not request.covered else 0
            request.times = CommitTimes(sync_ns, folder_sync, len(batch))
            request.done.set()
        self._publisher.put(entries)

    def _segment_for(self, record: bytes) -> Segment:
        """The current segment if ``record`` fits in it, else a new one (the full one is sealed)."""
        current = self._current
        if current is not None and not current.failed and current.fits(record):
            return current
        self._retire_current()
        self._seq += 1
        name = f"{time.time_ns():020d}-{os.getpid()}-{self._seq:06d}.journal"
        segment = create_segment(self.folder, name, fsync=self.fsync)
        with self._lock:
            self._segments.add(segment)
        self._current = segment
        return segment

    def _retire_current(self) -> None:
        """Seal the current segment: removed once Kafka acknowledged every record (a failed one is kept)."""
        current, self._current = self._current, None
        if current is None:
            return
        with self._lock:
            current.sealed = True
            done = current.outstanding == 0 and not current.failed
            if done:
                self._segments.discard(current)
        if done:
            current.remove()
            self._sync_folder_quietly()

    # ------------------------------------------------------------------ the publisher's side

    def _published(self, entries: Sequence[Entry]) -> None:
        """Kafka acknowledged these: count them off; remove sealed segments with nothing left."""
        finished: list[Segment] = []
        with self._lock:
            for entry in entries:
                segment = entry.segment
                segment.outstanding -= 1
                self._unpublished -= 1
                if segment.sealed and segment.outstanding == 0 and not segment.failed and segment in self._segments:
                    self._segments.discard(segment)
                    finished.append(segment)
        for segment in finished:
            segment.remove()
        if finished:
            self._sync_folder_quietly()

    def _sync_folder_quietly(self) -> None:
        """A removed segment's name made durable (observer: a removal lost to a crash only replays it)."""
        if not self.fsync:
            return
        try:
            fsync_folder(self.folder)
        except OSError as exc:
            log.warning("journal: could not sync %s: %s", self.folder, exc.strerror or exc)

    # ------------------------------------------------------------------ start-up

    def _recover(self) -> int:
        """Claim every orphaned segment and hand its records to the publisher; how many there were."""
        total = 0
        for segment, events in orphaned_events(self.folder):
            with self._lock:
                segment.outstanding = len(events)
                self._segments.add(segment)
                self._unpublished += len(events)
            self._publisher.put([Entry(event, segment) for event in events])
            total += len(events)
            log.info("journal: %d store event(s) of %s (a receiver that did not stop cleanly) to publish again",
                     len(events), segment.path.name)
        return total


def _sync_folder_timed(folder: Path) -> int:
    """:func:`sync_folder_durably` on a folder-sync thread; the nanoseconds it took."""
    started = time.perf_counter_ns()
    sync_folder_durably(folder)
    return time.perf_counter_ns() - started


__all__ = ["JOURNAL", "MAX_UNPUBLISHED", "CommitTimes", "Journal", "JournalFullError", "JournalWriteError"]
