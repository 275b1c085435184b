"""Where each instance's time goes inside the receiver: nanoseconds per stage, off by default.

With ``receiver.stage_timing_dir`` set, the receiver's association threads
and the store service add ``time.perf_counter_ns()`` differences to the
record of the instance their thread is handling (:meth:`StageTimer.add`);
the association closes the record once the C-STORE response is sent
(:meth:`StageTimer.finish`), which also notes the whole cycle since the
previous response on that thread (so what no stage names shows as the
cycle minus the stages). Records are kept in memory (a few hundred bytes per
instance) and written as one JSON file per process,
``stages-{pid}.json``, when the receiver stops: nothing is logged on the
way. ``benchmarks/bench_receiver.py`` sets it and prints the medians.

Stages (nanoseconds): ``receive`` (blocked in reading the instance's PDUs,
the sender's own time included), ``pdv`` (splitting PDUs, the command set,
feeding the fragments), ``parse`` (reading and identifying the header),
``write``, ``file_sync`` (fdatasync and close), ``place`` (link into its
name, the duplicates check), ``event`` (building the store event),
``folder_sync`` (on its own thread, overlapping ``ack``), ``ack`` (Kafka
acknowledging the store event and receipt), ``folder_wait`` (waiting for the
folder sync after the acknowledgement), with ``receiver.ack = "journal"`` instead of the last three:
``journal`` (waiting for the group commit), ``journal_sync`` (its fdatasync of the journal, beside
``folder_sync``) and ``group`` (a count: instances made durable by that commit), ``unmark``
(removing the ``.unacknowledged`` mark), ``bookkeeping`` (transfer log, metrics), ``response``
(encoding and sending the C-STORE response), and ``cycle``.

An observer: it never changes what the receiver does.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

#: Not part of an instance's sum: counts, and stages that run beside another (folder_sync beside ack;
#: journal_sync and folder_sync inside journal).
_NOT_ADDED = frozenset({"pdus", "folder_sync", "journal_sync", "group"})


class StageTimer:
    """Per-thread records of the instance being handled, collected for the whole process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._local = threading.local()
        self._lock = threading.Lock()
        self._records: list[dict[str, int]] = []

    def _current(self) -> dict[str, int]:
        record: dict[str, int] | None = getattr(self._local, "record", None)
        if record is None:
            record = self._local.record = {}
        return record

    def add(self, stage: str, ns: int) -> None:
        """Add ``ns`` nanoseconds to ``stage`` of the instance this thread is handling."""
        record = self._current()
        record[stage] = record.get(stage, 0) + ns

    def named_ns(self) -> int:
        """Nanoseconds in this thread's record so far, the stages that overlap another (folder_sync) left out."""
        return sum(v for k, v in self._current().items() if k not in _NOT_ADDED)

    def finish(self) -> None:
        """The instance's response is sent: keep its record, with the cycle since this thread's last one."""
        now = time.perf_counter_ns()
        record = self._current()
        last: int | None = getattr(self._local, "last", None)
        if last is not None:
            record["cycle"] = now - last
        self._local.last = now
        self._local.record = None
        with self._lock:
            self._records.append(record)

    def drop(self) -> None:
        """What this thread timed belongs to no instance (a C-ECHO, the association's end): forget it."""
        self._local.record = None
        self._local.last = None

    def records(self) -> list[dict[str, int]]:
        with self._lock:
            return list(self._records)

    def write(self) -> Path:
        """Write every record as ``{folder}/stages-{pid}.json``; its path.

        Raises:
            OSError: the folder cannot be written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"stages-{os.getpid()}.json"
        temp = path.with_suffix(".tmp")
        temp.write_text(json.dumps({"pid": os.getpid(), "records": self.records()}))
        temp.replace(path)
        return path


__all__ = ["StageTimer"]
