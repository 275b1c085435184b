"""The floor under the receiver's store step: only the durable write and the Kafka send, one instance at a time.

For ``bench_receiver.py --rows breakdown`` (issue 22): what one association
of ``dicomflow scp`` must do per instance at least, without DICOM networking
or parsing. Every store event is built before the clock starts (from the
corpus files, by the receiver's own :class:`~dicomflow.ingest.ingestor.Ingestor`);
then for each file, timed stage by stage with ``perf_counter_ns`` as inside
the receiver: ``write`` (create the temporary file beside its place, write
its bytes), ``file_sync`` (fdatasync, close), ``place`` (link into its name,
remove the temporary name), ``ack`` (the receiver's
:class:`~dicomflow.kafka.producer.Publisher`, linger 0, acks=all: the store
event and its receipt, waited for) while ``folder_sync`` (fsync of the
folder) runs on another thread, and ``folder_wait`` (waiting for that sync
after the acknowledgement).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dicomflow.dicom.part10 import read_file_meta
from dicomflow.ingest.ingestor import Ingestor, Source
from dicomflow.ingest.storage import make_folders, sync_folder_durably
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta
from dicomflow.settings import Settings, TopicSettings


def _prepare(ingestor: Ingestor, files: Sequence[Path]) -> list[tuple[bytes, Path, DicomStoreMeta]]:
    """Each file's bytes, its place under the root and its store event (untimed)."""
    source = Source(ae_title="STORESCU", address="127.0.0.1")
    prepared = []
    for file in files:
        data = file.read_bytes()
        meta, _ = read_file_meta(data, 132)
        header = ingestor.read_part10(data, file.name)
        identity = ingestor.identify(header, sop_class_uid=None, sop_instance_uid=None, calling_ae=source.ae_title)
        path = ingestor.path_of(identity)
        prepared.append((data, path, ingestor.store_event(identity, path, len(data), meta.transfer_syntax_uid, source)))
    return prepared


def _timed_folder_sync(folder: Path) -> int:
    started = time.perf_counter_ns()
    sync_folder_durably(folder)
    return time.perf_counter_ns() - started


def durable_send(settings: Settings, topics: TopicSettings, root: Path, files: Sequence[Path],
                 *, fsync: bool = True) -> tuple[float, list[dict[str, int]]]:
    """Write ``files`` durably under ``root`` and publish their store events, one by one; seconds and per-file stages."""
    storage = dataclasses.replace(settings.storage, root=root)
    ingestor = Ingestor(storage, dataclasses.replace(settings.ingest, fsync=fsync), settings.worker_node_id)
    prepared = _prepare(ingestor, files)
    publisher = Publisher(dataclasses.replace(settings.kafka, linger_ms=settings.receiver.kafka_linger_ms), topics,
                          client_id="bench-durable-send")
    records: list[dict[str, int]] = []
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-fsync")
    try:
        publisher.send_store_event(prepared[0][2], timeout_s=30.0)  # connected and warm before the clock starts
        started = time.perf_counter()
        for data, path, event in prepared[1:]:
            records.append(_one(publisher, pool, data, path, event, fsync))
        seconds = time.perf_counter() - started
    finally:
        pool.shutdown()
        publisher.close()
        ingestor.close()
    return seconds, records


def _one(publisher: Publisher, pool: ThreadPoolExecutor, data: bytes, path: Path, event: DicomStoreMeta,
         fsync: bool) -> dict[str, int]:
    t0 = time.perf_counter_ns()
    make_folders(path.parent, fsync=fsync)
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    t1 = time.perf_counter_ns()
    if fsync:
        os.fdatasync(fd)
    os.close(fd)
    t2 = time.perf_counter_ns()
    os.link(temp, path)
    os.unlink(temp)
    t3 = time.perf_counter_ns()
    synced = pool.submit(_timed_folder_sync, path.parent) if fsync else None
    result = publisher.send_store_event(event, timeout_s=30.0)
    t4 = time.perf_counter_ns()
    if not result.ok:
        raise RuntimeError(f"Kafka did not acknowledge: {result.failures[0].reason}")
    record = {"write": t1 - t0, "file_sync": t2 - t1, "place": t3 - t2, "ack": t4 - t3}
    if synced is not None:
        record["folder_sync"] = synced.result()
        record["folder_wait"] = time.perf_counter_ns() - t4
    record["cycle"] = time.perf_counter_ns() - t0
    return record


__all__ = ["durable_send"]
