"""Helpers for the ingest tests: a real receiver on a free port, real clients, topics read back."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomflow.ingest.uids import is_valid_uid
from dicomflow.kafka.admin import create_topics
from dicomflow.kafka.reader import read_all
from dicomflow.kafka.records import Record
from dicomflow.models import AuditEvent, DicomStoreMeta, decode
from dicomflow.settings import Settings
from dicomflow.stack import free_port
from tests.conftest import sample_files

STORESCU = "/usr/bin/storescu"
#: storescu proposes only uncompressed syntaxes unless told which compressed one to offer.
STORESCU_FLAGS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2": (),
    "1.2.840.10008.1.2.1": (),
    "1.2.840.10008.1.2.2": (),
    "1.2.840.10008.1.2.1.99": ("-xd",),
    "1.2.840.10008.1.2.4.50": ("-xy",),
    "1.2.840.10008.1.2.4.51": ("-xx",),
    "1.2.840.10008.1.2.4.70": ("-xs",),
    "1.2.840.10008.1.2.4.80": ("-xt",),
    "1.2.840.10008.1.2.4.81": ("-xu",),
    "1.2.840.10008.1.2.4.90": ("-xv",),
    "1.2.840.10008.1.2.4.91": ("-xw",),
    "1.2.840.10008.1.2.5": ("-xr",),
}




def with_receiver(settings: Settings, **changes: object) -> Settings:
    """``settings`` with the receiver on a free local port (plus ``changes``)."""
    receiver = dataclasses.replace(settings.receiver, host="127.0.0.1", port=free_port(), **changes)  # type: ignore[arg-type]
    return dataclasses.replace(settings, receiver=receiver)


def with_ingest(settings: Settings, **changes: object) -> Settings:
    """``settings`` with ``changes`` to its ``[ingest]`` section (tenants, transfer syntaxes, fsync)."""
    return dataclasses.replace(settings, ingest=dataclasses.replace(settings.ingest, **changes))  # type: ignore[arg-type]


def make_topics(settings: Settings) -> None:
    create_topics(settings.kafka, settings.topics)


@contextmanager
def running_receiver(settings: Settings) -> Iterator[object]:
    """A :class:`~dicomflow.receiver.scp.Receiver` serving in this process; stopped (and flushed) on exit."""
    from dicomflow.receiver.scp import Receiver

    receiver = Receiver(settings)
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def storescu(port: int, paths: Sequence[Path | str], *flags: str, calling: str = "STORESCU",
             called: str = "DICOMFLOW", nodelay: bool = True) -> subprocess.CompletedProcess[str]:
    """dcmtk's storescu (by full path), proposing only what the files need.

    TCP_NODELAY is on unless ``nodelay`` is False: then Nagle stays on, as a hospital's storescu runs.
    """
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    return subprocess.run(
        [STORESCU, "-R", "-aet", calling, "-aec", called, *flags, "127.0.0.1", str(port), *map(str, paths)],
        env=env, capture_output=True, text=True, timeout=240,
    )


@dataclass(frozen=True)
class Sample:
    """One file of the sample corpus and what the receiver must make of it."""

    path: Path
    sop_uid: str
    study_uid: str
    series_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str


def build_sample_corpus(dest: Path) -> list[Sample]:
    """pydicom's sample files that a storage SCP can be sent, with unique SOP Instance UIDs.

    Kept: Part 10 files of a storage SOP class with valid UIDs that dcmtk
    reads without an error (a few samples are deliberately broken). Several samples are the same instance in another transfer syntax;
    those get a new SOP Instance UID (saved by pydicom in their own syntax)
    so every file is a distinct instance.
    """
    from pynetdicom import AllStoragePresentationContexts

    storage = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    dest.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    out: list[Sample] = []
    for path in sample_files("test_files") + sample_files("charset_files"):
        if path.read_bytes()[128:132] != b"DICM" or not dcmtk_reads(path):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                ds = pydicom.dcmread(path)
                uids = [str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID),
                        str(ds.SeriesInstanceUID), str(ds.file_meta.TransferSyntaxUID)]
            except Exception:  # noqa: BLE001 - not a usable sample
                continue
            if not all(is_valid_uid(u) for u in uids) or uids[0] not in storage or uids[4] not in STORESCU_FLAGS:
                continue
            target = dest / f"{path.parent.name}_{path.name}"
            if uids[1] in seen:
                ds.SOPInstanceUID = generate_uid(entropy_srcs=[path.name])
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.save_as(target, enforce_file_format=True)
                uids[1] = str(ds.SOPInstanceUID)
            else:
                shutil.copyfile(path, target)
        seen.add(uids[1])
        out.append(Sample(target, uids[1], uids[2], uids[3], uids[0], uids[4]))
    return out


def dcmtk_reads(path: Path) -> bool:
    """True when dcmtk reads the file without an error (storescu would refuse it otherwise)."""
    run = subprocess.run(["/usr/bin/dcmdump", "-q", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         timeout=60)
    return run.returncode == 0 and b"E:" not in run.stderr and b"F:" not in run.stderr


def send_corpus_with_storescu(port: int, samples: Iterable[Sample]) -> list[subprocess.CompletedProcess[str]]:
    """One storescu run per transfer syntax, offering that syntax (so each file goes as it is)."""
    groups: dict[str, list[Path]] = defaultdict(list)
    for s in samples:
        groups[s.transfer_syntax_uid].append(s.path)
    return [storescu(port, files, *STORESCU_FLAGS[ts]) for ts, files in sorted(groups.items())]


def read_store_events(settings: Settings, topic: str) -> list[tuple[Record, DicomStoreMeta]]:
    return [(r, decode(r.value or b"", DicomStoreMeta)) for r in read_all(settings.kafka, topic)]


def read_audit(settings: Settings) -> list[AuditEvent]:
    return [decode(r.value or b"", AuditEvent) for r in read_all(settings.kafka, settings.topics.audit)]


def stored_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.dcm"))


def read_dataset(path: Path) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True)
