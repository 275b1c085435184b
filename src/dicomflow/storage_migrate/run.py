"""``dicomflow storage migrate``: every indexed object onto the other backend, the index repointed in batches.

One batch is a run of instances in primary-key order (:mod:`dicomflow.store.locations`):

1. every location in their rows is read: one naming the target already is
   skipped (a rerun), one naming the source is turned into its key (the key
   is the same on both backends), one neither store accepts is reported;
2. each distinct key is copied and verified (:class:`~.copy.Copier`, ``jobs``
   at a time);
3. the rows of the keys that verified are repointed in one transaction;
4. with ``delete_source``, only then are those keys deleted from the source.

Resumable after a kill at any point: a row is repointed only after its
object verified in the target, and an object found in the target with the
same bytes is not copied again. ``dry_run`` reads everything, writes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomflow.blobs import BlobLocationError, BlobStore, open_store
from dicomflow.settings import DatabaseSettings, StorageSettings
from dicomflow.storage_migrate.copy import Copier, CopyResult
from dicomflow.store.connection import StoreConnection
from dicomflow.store.locations import START, InstanceKey, LocationRef, count_instances, next_instances, references, repoint

log = logging.getLogger(__name__)

Backend = Literal["filesystem", "s3"]


@dataclass(frozen=True)
class MigrateOptions:
    """What the operator asked for (the command's options)."""

    to: Backend
    dry_run: bool = False
    delete_source: bool = False
    batch_size: int = 500
    jobs: int = 8


@dataclass
class Summary:
    """What a run did (with ``dry_run``: would do). Objects are counted once per key, rows per column."""

    instances: int = 0
    copied: int = 0
    bytes_copied: int = 0
    #: Objects found in the target with the source's bytes: not copied again.
    present: int = 0
    #: How copied / present objects were verified: "etag" or "sha256".
    checks: Counter[str] = field(default_factory=Counter)
    rows_updated: int = 0
    #: Row columns that named the target already (a rerun): left as they are.
    rows_skipped: int = 0
    #: Row columns left unchanged because their object failed (or they changed meanwhile).
    rows_failed: int = 0
    deleted: int = 0
    #: (location, reason) of every object that could not be migrated.
    failed: list[tuple[str, str]] = field(default_factory=list)


def stores_for(settings: StorageSettings, to: Backend) -> tuple[BlobStore, BlobStore]:
    """(source, target): the filesystem under ``storage.root`` and the bucket of ``[storage.s3]``, as ``to`` says."""
    fs = open_store(dataclasses.replace(settings, backend="filesystem"))
    s3 = open_store(dataclasses.replace(settings, backend="s3"))
    return (fs, s3) if to == "s3" else (s3, fs)


class Migration:
    """One run of the migration; :meth:`run` returns its :class:`Summary`.

    ``on_batch(instances_done, summary)`` is called after each batch (the progress bar).
    """

    def __init__(self, storage: StorageSettings, db: DatabaseSettings, options: MigrateOptions,
                 on_batch: Callable[[int, Summary], None] | None = None) -> None:
        self.options = options
        self.source, self.target = stores_for(storage, options.to)
        self.part_size = storage.s3.multipart_chunk_bytes
        self.scratch_parent = storage.root
        self.db = StoreConnection(db)
        self.on_batch = on_batch
        self.summary = Summary()

    def count(self) -> int:
        """Instances the run will walk (for the progress bar's total)."""
        return self.db.run("count instances", count_instances)

    def run(self) -> Summary:
        """Every batch in turn.

        Raises:
            BlobUnavailable: a store could not serve (transient: run again to resume).
            StoreError: PostgreSQL failed (transient: run again to resume).
        """
        scratch = self._scratch()
        pool = ThreadPoolExecutor(max(1, self.options.jobs), thread_name_prefix="migrate")
        try:
            copier = Copier(self.source, self.target, part_size=self.part_size, scratch=scratch,
                            dry_run=self.options.dry_run)
            after = START
            while batch := self._next(after):
                self._batch(batch, copier, pool)
                after = batch[-1]
                if self.on_batch is not None:
                    self.on_batch(len(batch), self.summary)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a stop (Ctrl-C, an outage) waits for no queued copy
            shutil.rmtree(scratch, ignore_errors=True)
            self.db.discard()
        return self.summary

    def _next(self, after: InstanceKey) -> list[InstanceKey]:
        return self.db.run("next instances", lambda c: next_instances(c, after, self.options.batch_size))

    def _scratch(self) -> Path:
        """Where downloads from S3 wait for their write (under the storage root: the filesystem they go to)."""
        self.scratch_parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".migrate-", dir=self.scratch_parent))

    def _batch(self, batch: list[InstanceKey], copier: Copier, pool: ThreadPoolExecutor) -> None:
        s = self.summary
        s.instances += len(batch)
        refs = self.db.run("read locations", lambda c: references(c, batch[0], batch[-1]))
        wanted: dict[str, list[LocationRef]] = {}
        for ref in refs:
            key = self._source_key(ref)
            if key is not None:
                wanted.setdefault(key, []).append(ref)
        results = dict(zip(wanted, pool.map(copier.copy, wanted), strict=True))
        moves: list[tuple[LocationRef, str]] = []
        for key, result in results.items():
            self._count(result)
            if result.outcome == "failed":
                s.rows_failed += len(wanted[key])
            else:
                moves.extend((ref, self.target.location(key)) for ref in wanted[key])
        if self.options.dry_run or not moves:
            s.rows_updated += len(moves)
            return
        changed = self.db.run("repoint rows", lambda c: repoint(c, moves))
        s.rows_updated += changed
        s.rows_failed += len(moves) - changed
        if self.options.delete_source:
            self._delete_sources(results, changed == len(moves))

    def _source_key(self, ref: LocationRef) -> str | None:
        """The key of a location naming the source; None (counted) when it names the target or is refused."""
        on_s3 = ref.location.startswith("s3://")
        store = self.target if on_s3 == (self.target.backend == "s3") else self.source
        try:
            key = store.key_of(ref.location)
        except BlobLocationError as exc:
            self._fail(ref.location, f"location refused by the {store.backend} store: {exc.problem}")
            self.summary.rows_failed += 1
            return None
        if store is self.target:
            self.summary.rows_skipped += 1
            return None
        return key

    def _count(self, result: CopyResult) -> None:
        s = self.summary
        if result.outcome == "copied":
            s.copied += 1
            s.bytes_copied += result.size
        elif result.outcome == "present":
            s.present += 1
        else:
            self._fail(self.source.location(result.key), result.reason)
            return
        if result.check:
            s.checks[result.check] += 1

    def _fail(self, location: str, reason: str) -> None:
        log.warning("not migrated: %s: %s", location, reason)
        self.summary.failed.append((location, reason))

    def _delete_sources(self, results: dict[str, CopyResult], all_repointed: bool) -> None:
        """Delete the sources of a batch whose rows all point at the verified copies now."""
        if not all_repointed:
            log.warning("some rows changed while migrated: the sources of this batch are kept")
            return
        for key, result in results.items():
            if result.outcome != "failed":
                self.source.delete(key)
                self.summary.deleted += 1


__all__ = ["Backend", "MigrateOptions", "Migration", "Summary", "stores_for"]
