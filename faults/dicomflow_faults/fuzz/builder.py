"""Building the cases of one fuzz run: controls, payloads, damaged files and file-level traps."""

from __future__ import annotations

import os
import random
import shutil
import uuid
import warnings
from pathlib import Path

from dicomflow.errors import WireFormatError
from dicomflow.models import DicomStoreMeta, decode, encode, now, uid_hash
from dicomflow_faults.fuzz.cases import Case, Kind
from dicomflow_faults.fuzz.files import Sample, damage, with_uids, without_sop_uid
from dicomflow_faults.instances import make_uid


class CaseBuilder:
    """Collects the cases of one fuzz run and writes their files under the storage root."""

    def __init__(self, root: Path, scratch: Path, seed: int) -> None:
        self.root = root
        self.scratch = scratch
        self.rng = random.Random(seed)
        self.run = self.rng.randrange(10**7, 10**8)
        self.counter = 0
        self.cases: list[Case] = []

    def uids(self) -> tuple[str, str, str]:
        self.counter += 1
        return (make_uid(self.run, 1, self.counter), make_uid(self.run, 2, self.counter),
                make_uid(self.run, 3, self.counter))

    def event(self, path: Path | str, study: str, series: str, sop: str, size: int = 0,
              ts: str = "1.2.840.10008.1.2.1") -> DicomStoreMeta:
        return DicomStoreMeta(
            trace_id=str(uuid.uuid4()), worker_node_id="faults-fuzz", tenant_id="default", patient_id="FUZZ",
            study_uid=study, series_uid=series, sop_uid=sop, file_size=size, file_path=str(path),
            transfer_syntax_uid=ts, number_of_frames=1, created_time=now(), series_uid_hash=uid_hash(series),
            study_uid_hash=uid_hash(study), accession_number=None, target_ts=ts, study_date=now().date(),
            transfer_status="NoNeedTransfer", source_ip="127.0.0.1", source_ae="FAULTS",
        )

    def add(self, kind: Kind, label: str, value: bytes, sop_uid: str | None = None) -> None:
        try:
            valid = isinstance(decode(value, DicomStoreMeta), DicomStoreMeta)
        except WireFormatError:
            valid = False
        if sop_uid is None and valid:
            sop_uid = decode(value, DicomStoreMeta).sop_uid
        self.cases.append(Case(len(self.cases), kind, label, value, sop_uid, valid))

    def file_case(self, kind: Kind, label: str, data: bytes | None, uids: tuple[str, str, str],
                  path: Path | None = None) -> Path:
        study, series, sop = uids
        if path is None:
            path = self.root / "default" / study / series / f"{sop}.dcm"
        if data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        self.add(kind, label, encode(self.event(path, study, series, sop, len(data or b""))), sop)
        return path

    def damaged_files(self, count: int, samples: list[Sample]) -> None:
        if not samples:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(count):
                sample = self.rng.choice(samples)
                uids = self.uids()
                try:
                    clean = with_uids(sample.dataset, *uids)
                except Exception:  # noqa: BLE001 - checked in usable_samples; skip if it fails now
                    continue
                how, data = damage(clean, self.rng)
                self.file_case("file", f"{how} {sample.name}", data, uids)

    def specials(self, good: Path, good_uids: tuple[str, str, str]) -> None:
        """One of each file-level trap."""
        rnd = self.rng.randbytes
        self.file_case("special", "empty file", b"", self.uids())
        self.file_case("special", "random bytes", rnd(4096), self.uids())
        self.file_case("special", "preamble + DICM + garbage", b"\0" * 128 + b"DICM" + rnd(512), self.uids())
        self.file_case("special", "preamble only", b"\0" * 128 + b"DICM", self.uids())
        uids = self.uids()
        folder = self.root / "default" / uids[0] / uids[1] / f"{uids[2]}.dcm"
        folder.mkdir(parents=True)
        self.file_case("special", "a folder, not a file", None, uids, folder)
        uids = self.uids()
        self.file_case("special", "missing file", None, uids, self.root / "default" / "nowhere" / f"{uids[2]}.dcm")
        uids = self.uids()
        self.add("special", "relative path escaping the root",
                 encode(self.event("../../../../../../etc/hostname", *uids)), uids[2])
        uids = self.uids()
        self.add("special", "absolute path outside the root", encode(self.event("/etc/hostname", *uids)), uids[2])
        # A valid DICOM file outside the root, reached through a symlink inside it.
        uids = self.uids()
        outside = self.scratch / f"{uids[2]}.dcm"
        shutil.copyfile(good, outside)
        link = self.root / "default" / "links" / f"{uids[2]}.dcm"
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(outside, link)
        self.add("special", "symlink to a valid file outside the root", encode(self.event(link, *good_uids)))
        uids = self.uids()
        self.add("special", "event names another instance than its file",
                 encode(self.event(good, uids[0], uids[1], uids[2])), uids[2])
        uids = self.uids()
        self.file_case("special", "file without SOP Instance UID", without_sop_uid(good), uids)


__all__ = ["CaseBuilder"]
