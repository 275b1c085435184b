"""The receiver's journal (receiver.ack = "journal"): records, group commit, replay of a dead process's segments.

The publisher here is a stand-in that records the batches it is given and
answers as told (what is under test is the journal's bookkeeping: what is
durable when, what is replayed, what is removed); the real broker is in
tests/integration/receiver/test_scp_journal.py.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from dicomflow.ingest import journal as journal_module
from dicomflow.ingest import journal_segment, storage
from dicomflow.ingest.duplicates import unacknowledged_mark
from dicomflow.ingest.ingestor import Ingestor
from dicomflow.ingest.journal import JOURNAL, Journal, JournalFullError, JournalWriteError
from dicomflow.ingest.journal_segment import SEGMENT_BYTES, Segment, decode_records, encode_record, segment_paths
from dicomflow.ingest.service import StoreService
from dicomflow.ingest.transfer_log import TransferLog
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta, encode
from dicomflow.settings import IngestSettings, StorageSettings
from tests.unit.ingest.test_service import ASSOC, encoded, request
from tests.unit.test_models import store_event


class BatchPublisher:
    """Records every batch; fails every message while ``failing`` is set."""

    def __init__(self, *, failing: bool = False) -> None:
        self.failing = failing
        self.batches: list[list[DicomStoreMeta]] = []
        self.lock = threading.Lock()

    def send_store_events(self, events: Sequence[DicomStoreMeta], *, with_receipt: bool = True,
                          timeout_s: float | None = None) -> BatchResult:
        with self.lock:
            self.batches.append(list(events))
        if self.failing:
            time.sleep(0.01)
            return BatchResult(0, [DeliveryFailure(i, "storage_queue", None, "Local: Broker transport failure")
                                   for i in range(len(events))])
        return BatchResult(2 * len(events))

    def sop_uids(self) -> list[str]:
        with self.lock:
            return [e.sop_uid for batch in self.batches for e in batch]


def open_journal(folder: Path, publisher: BatchPublisher, *, fsync: bool = True) -> Journal:
    return Journal(folder, cast(Publisher, publisher), fsync=fsync, publish_timeout_s=1.0)


def wait_for(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_records_decode_up_to_the_first_unwritten_or_torn_one() -> None:
    one, two, three = (encode_record(f"payload {i}".encode()) for i in range(3))
    assert decode_records(one + two + bytes(64)) == [b"payload 0", b"payload 1"]
    torn = bytearray(three)
    torn[-1] ^= 0xFF  # a record whose sync never completed
    assert decode_records(one + two + bytes(torn) + one) == [b"payload 0", b"payload 1"]
    assert decode_records(one + two[:-3]) == [b"payload 0"]  # runs past the end
    assert decode_records(b"") == []


def test_a_committed_event_is_on_disk_before_commit_returns_and_published_after(tmp_path: Path) -> None:
    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher)
    event = store_event(sop_uid="1.2.3.4.5.1")
    times = journal.commit(event, tmp_path)
    [segment] = segment_paths(tmp_path / "j")
    assert segment.stat().st_size == SEGMENT_BYTES  # preallocated: the sync writes the record only
    assert decode_records(segment.read_bytes()) == [encode(event)]
    assert times.group >= 1 and times.journal_sync_ns > 0 and times.folder_sync_ns > 0
    wait_for(lambda: journal.backlog() == 0)
    assert publisher.sop_uids() == ["1.2.3.4.5.1"]
    journal.close()
    assert segment_paths(tmp_path / "j") == []  # everything acknowledged: nothing left to replay


def test_one_sync_serves_every_instance_that_arrived_while_the_previous_one_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs: list[int] = []
    real_sync = Segment.sync

    def slow_sync(self: Segment, **kwargs: object) -> None:
        syncs.append(self.offset)
        time.sleep(0.02)  # a disk busy for 20 ms: everyone arriving meanwhile waits for the next sync
        real_sync(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Segment, "sync", slow_sync)
    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher)
    groups: list[int] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        for i in range(10):
            times = journal.commit(store_event(sop_uid=f"1.2.3.{n}.{i}"), tmp_path)
            with lock:
                groups.append(times.group)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(groups) == 80
    assert len(syncs) < 40 and max(groups) > 1  # 80 records, far fewer syncs
    wait_for(lambda: journal.backlog() == 0)
    assert sorted(publisher.sop_uids()) == sorted(f"1.2.3.{n}.{i}" for n in range(8) for i in range(10))
    journal.close()


def test_a_lone_sender_commits_on_its_own_thread_and_close_waits_for_a_commit_under_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_threads: list[threading.Thread] = []
    real_sync = Segment.sync
    started = threading.Event()

    def recorded_sync(self: Segment, **kwargs: object) -> None:
        sync_threads.append(threading.current_thread())
        started.set()
        time.sleep(0.05)
        real_sync(self, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Segment, "sync", recorded_sync)
    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher)
    journal.commit(store_event(sop_uid="1.2.3.9.1"), tmp_path)
    assert sync_threads == [threading.current_thread()]  # no hand-over to a committer thread
    late = threading.Thread(target=journal.commit, args=(store_event(sop_uid="1.2.3.9.2"), tmp_path))
    started.clear()
    late.start()
    assert started.wait(5)
    journal.close()  # returns only once the commit under way is done and Kafka acknowledged it
    late.join(5)
    assert not late.is_alive() and sync_threads[1] is late
    assert sorted(publisher.sop_uids()) == ["1.2.3.9.1", "1.2.3.9.2"]


def test_what_kafka_did_not_acknowledge_is_replayed_at_the_next_start(tmp_path: Path) -> None:
    down = BatchPublisher(failing=True)
    journal = open_journal(tmp_path / "j", down)
    for i in range(5):
        journal.commit(store_event(sop_uid=f"1.2.3.9.{i}"), None)
    journal.close(timeout_s=0.2)
    assert len(segment_paths(tmp_path / "j")) == 1  # kept for the next start
    up = BatchPublisher()
    again = open_journal(tmp_path / "j", up)
    assert again.replayed == 5
    wait_for(lambda: again.backlog() == 0)
    assert sorted(up.sop_uids()) == [f"1.2.3.9.{i}" for i in range(5)]
    again.close()
    assert segment_paths(tmp_path / "j") == []


def test_a_full_segment_is_removed_once_every_record_in_it_is_acknowledged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Segment, "fits", lambda self, record: self.offset + len(record) + 8 <= 3 * len(record))
    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher, fsync=False)
    for i in range(7):
        journal.commit(store_event(sop_uid=f"1.2.3.8.{i}"), None)
    wait_for(lambda: journal.backlog() == 0)
    wait_for(lambda: len(segment_paths(tmp_path / "j")) == 1)  # only the current one stays
    journal.close()
    assert segment_paths(tmp_path / "j") == []


def test_a_failed_sync_fails_the_commit_and_keeps_the_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_sync(self: Segment, **kwargs: object) -> None:
        self.failed = True
        raise OSError(errno.EIO, "Input/output error")

    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher)
    monkeypatch.setattr(Segment, "sync", broken_sync)
    with pytest.raises(JournalWriteError, match="Input/output error"):
        journal.commit(store_event(sop_uid="1.2.3.7.1"), tmp_path)
    assert journal.backlog() == 0 and publisher.sop_uids() == []  # never durable: never published
    monkeypatch.undo()
    journal.commit(store_event(sop_uid="1.2.3.7.2"), tmp_path)  # a new segment takes over
    wait_for(lambda: journal.backlog() == 0)
    assert publisher.sop_uids() == ["1.2.3.7.2"]
    journal.close()
    assert len(segment_paths(tmp_path / "j")) == 1  # the failed one stays for the next start's replay


def test_a_backlog_past_the_limit_is_refused_until_kafka_catches_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal_module, "MAX_UNPUBLISHED", 3)
    publisher = BatchPublisher(failing=True)
    journal = open_journal(tmp_path / "j", publisher, fsync=False)
    for i in range(3):
        journal.commit(store_event(sop_uid=f"1.2.3.6.{i}"), None)
    with pytest.raises(JournalFullError) as refused:
        journal.commit(store_event(sop_uid="1.2.3.6.9"), None)
    assert refused.value.status == 0xA700  # out of resources: the sender retries
    publisher.failing = False
    wait_for(lambda: journal.backlog() == 0)
    journal.commit(store_event(sop_uid="1.2.3.6.9"), None)
    journal.close()


_OWNER = """
import sys, time
from pathlib import Path
from typing import cast
from dicomflow.ingest.journal import Journal
from dicomflow.kafka.delivery import BatchResult, DeliveryFailure
from tests.unit.test_models import store_event

class Down:
    def send_store_events(self, events, *, with_receipt=True, timeout_s=None):
        time.sleep(0.05)
        return BatchResult(0, [DeliveryFailure(i, "storage_queue", None, "down") for i in range(len(events))])

journal = Journal(Path(sys.argv[1]), cast(object, Down()), fsync=True, publish_timeout_s=1.0)
for i in range(4):
    journal.commit(store_event(sop_uid=f"1.2.3.5.{i}"), None)
print("committed", flush=True)
time.sleep(60)
"""


def test_the_segments_of_a_killed_receiver_are_replayed_and_a_live_ones_are_not(tmp_path: Path) -> None:
    folder = tmp_path / "j"
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    with subprocess.Popen([sys.executable, "-c", _OWNER, str(folder)], stdout=subprocess.PIPE, text=True,
                          env=env) as owner:
        try:
            assert owner.stdout is not None and owner.stdout.readline().strip() == "committed"
            publisher = BatchPublisher()
            neighbour = open_journal(folder, publisher)  # another worker process of the same receiver
            assert neighbour.replayed == 0  # the owner is alive: its lock holds
            neighbour.close()
            os.kill(owner.pid, signal.SIGKILL)
            owner.wait(10)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait(10)
    restarted = open_journal(folder, publisher)
    assert restarted.replayed == 4
    wait_for(lambda: restarted.backlog() == 0)
    assert sorted(publisher.sop_uids()) == [f"1.2.3.5.{i}" for i in range(4)]
    restarted.close()
    assert segment_paths(folder) == []


def _journal_service(tmp_path: Path, publisher: BatchPublisher) -> StoreService:
    ingestor = Ingestor(StorageSettings(root=tmp_path / "root"), IngestSettings(), "node-1")
    transfers = TransferLog("node-1", lambda events: None)
    journal = open_journal(tmp_path / "root" / JOURNAL, publisher)
    return StoreService(ingestor, cast(Publisher, publisher), transfers, publish_timeout_s=1.0, journal=journal)


def test_the_store_service_answers_success_from_the_journal_and_drops_the_mark(tmp_path: Path) -> None:
    publisher = BatchPublisher(failing=True)  # Kafka down: the answer does not wait for it
    svc = _journal_service(tmp_path, publisher)
    outcome = svc.store(ASSOC, request(encoded()))
    assert outcome.status == 0
    path = tmp_path / "root" / "default" / "20240305" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert path.is_file()
    wait_for(lambda: not unacknowledged_mark(path).exists())  # the durable record stands in for it (Journal.tidy)
    assert svc.journal is not None and svc.journal.backlog() == 1
    publisher.failing = False
    wait_for(lambda: svc.journal is not None and svc.journal.backlog() == 0)
    assert "1.2.3.4.5" in publisher.sop_uids()
    svc.close()
    assert segment_paths(tmp_path / "root" / JOURNAL) == []


def test_a_journal_that_cannot_sync_answers_out_of_resources_and_keeps_the_mark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_sync(self: Segment, **kwargs: object) -> None:
        self.failed = True
        raise OSError(errno.ENOSPC, "No space left on device")

    publisher = BatchPublisher()
    svc = _journal_service(tmp_path, publisher)
    monkeypatch.setattr(Segment, "sync", broken_sync)
    outcome = svc.store(ASSOC, request(encoded()))
    assert outcome.status == 0xA700 and outcome.comment is not None and "No space" in outcome.comment
    path = tmp_path / "root" / "default" / "20240305" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm"
    assert unacknowledged_mark(path).exists()  # the sender's identical retry is published again
    monkeypatch.undo()
    assert svc.store(ASSOC, request(encoded())).status == 0
    wait_for(lambda: svc.journal is not None and svc.journal.backlog() == 0)
    assert publisher.sop_uids() == ["1.2.3.4.5"]
    svc.close()


def test_with_syncfs_one_sync_makes_the_files_of_the_group_durable_not_one_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_syncs: list[int] = []
    fs_syncs: list[int] = []
    real_syncfs = journal_segment.syncfs
    monkeypatch.setattr(storage, "_sync_data", lambda fd: file_syncs.append(fd))
    monkeypatch.setattr(journal_segment, "syncfs", lambda fd: (fs_syncs.append(fd), real_syncfs(fd))[1])
    publisher = BatchPublisher()
    svc = _journal_service(tmp_path, publisher)
    assert svc.journal is not None and svc.journal.sync_file_system == journal_segment.HAVE_SYNCFS
    if not svc.journal.sync_file_system:
        svc.close()
        pytest.skip("no syncfs(2) on this platform: the journal syncs file by file")
    outcome = svc.store(ASSOC, request(encoded()))
    assert outcome.status == 0
    assert file_syncs == [] and len(fs_syncs) == 1  # no fdatasync of the file, one syncfs for all of it
    wait_for(lambda: svc.journal is not None and svc.journal.backlog() == 0)
    svc.close()


def test_without_syncfs_the_file_is_synced_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file_syncs: list[int] = []
    monkeypatch.setattr(storage, "_sync_data", lambda fd: file_syncs.append(fd))
    publisher = BatchPublisher()
    ingestor = Ingestor(StorageSettings(root=tmp_path / "root"), IngestSettings(), "node-1")
    journal = Journal(tmp_path / "root" / JOURNAL, cast(Publisher, publisher), fsync=True, publish_timeout_s=1.0,
                      sync_file_system=False)
    svc = StoreService(ingestor, cast(Publisher, publisher), TransferLog("node-1", lambda events: None),
                       publish_timeout_s=1.0, journal=journal)
    assert svc.store(ASSOC, request(encoded())).status == 0
    assert len(file_syncs) == 1  # the instance file's own fdatasync (the journal's is in journal_segment)
    wait_for(lambda: journal.backlog() == 0)
    svc.close()


def test_an_unexpected_error_in_the_committer_fails_that_group_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_append = Segment.append
    calls: list[int] = []

    def append_once_broken(self: Segment, records: bytes) -> None:
        calls.append(len(records))
        if len(calls) == 1:
            raise RuntimeError("a bug")
        real_append(self, records)

    monkeypatch.setattr(Segment, "append", append_once_broken)
    publisher = BatchPublisher()
    journal = open_journal(tmp_path / "j", publisher, fsync=False)
    with pytest.raises(JournalWriteError, match="RuntimeError: a bug"):
        journal.commit(store_event(sop_uid="1.2.3.4.1"), None)
    journal.commit(store_event(sop_uid="1.2.3.4.2"), None)  # the next commit is led and succeeds
    wait_for(lambda: journal.backlog() == 0)
    assert publisher.sop_uids() == ["1.2.3.4.2"]
    journal.close()
