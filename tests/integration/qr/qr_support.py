"""A small index for the C-FIND tests: synthetic series and instances of two tenants written through PgStore."""

from __future__ import annotations

import datetime as dt
import os
import struct
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pydicom

from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import DatabaseSettings
from dicomflow.store import PgStore
from dicomflow.warehouse.synthetic import instance_messages, state_message

TENANT = "tenant-a"
OTHER_TENANT = "tenant-b"
#: A calling AE title mapped to the other tenant (ingest.ae_tenants).
OTHER_AE = "OTHERAE"
#: Instances of the big series (the C-CANCEL test).
BIG_SERIES = 3000


@dataclass(frozen=True)
class Series:
    tenant: str
    run: int
    study: int
    series: int
    patient_id: str
    patient_name: str
    study_date: dt.date
    modality: str
    instances: int
    study_time: dt.time = dt.time(9, 30)


#: The index: three patients of the first tenant (one with non-ASCII letters), one of the other.
SERIES: tuple[Series, ...] = (
    Series(TENANT, 1, 1, 1, "PAT-1", "Doe^John", dt.date(2024, 1, 5), "CT", 3, dt.time(8, 15)),
    Series(TENANT, 1, 1, 2, "PAT-1", "Doe^John", dt.date(2024, 1, 5), "SR", 1, dt.time(8, 15)),
    Series(TENANT, 1, 2, 1, "PAT-1", "Doe^John", dt.date(2024, 3, 10), "MR", 2, dt.time(14, 0)),
    Series(TENANT, 1, 3, 1, "PAT-2", "Smith^Jane", dt.date(2023, 12, 1), "CT", 2),
    Series(TENANT, 1, 4, 1, "PAT-3", "Dörte^Zoë", dt.date(2022, 6, 30), "US", 1),
    Series(TENANT, 1, 5, 1, "PAT-4", "Big^Series", dt.date(2021, 2, 2), "CT", BIG_SERIES),
    Series(OTHER_TENANT, 2, 1, 1, "PAT-9", "Doe^Other", dt.date(2024, 1, 6), "CT", 2),
)


def records(s: Series) -> tuple[DicomStateMeta, list[DicomStoreMeta], list[DicomImageMeta]]:
    state = msgspec.structs.replace(
        state_message(s.run, s.study, s.series, instances=s.instances, tenant=s.tenant),
        patient_id=s.patient_id, patient_name=s.patient_name, study_date=s.study_date,
        study_date_origin=s.study_date.strftime("%Y%m%d"), modality=s.modality, study_time=s.study_time,
    )
    receipts, images = [], []
    for number in range(1, s.instances + 1):
        receipt, image = instance_messages(s.run, s.study, s.series, number, tenant=s.tenant)
        receipts.append(msgspec.structs.replace(receipt, patient_id=s.patient_id))
        images.append(msgspec.structs.replace(image, patient_id=s.patient_id))
    return state, receipts, images


def fill_index(database: DatabaseSettings) -> dict[tuple[int, int, int], DicomStateMeta]:
    """Migrate and fill the index; the state row of each (run, study, series)."""
    out: dict[tuple[int, int, int], DicomStateMeta] = {}
    with PgStore(database) as store:
        store.migrate()
        for s in SERIES:
            state, receipts, images = records(s)
            store.write_batch(receipts, [state], images)
            out[(s.run, s.study, s.series)] = state
    return out


def findscu(port: int, out: Path, *keys: str, model: str = "-S", calling: str = "FINDSCU",
            extra: Sequence[str] = ()) -> tuple[subprocess.CompletedProcess[str], list[pydicom.Dataset]]:
    """dcmtk's findscu with ``-k`` keys; its responses (``-X``) read back, in order."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = ["/usr/bin/findscu", model, "-aet", calling, "-aec", "DICOMFLOW", "-X", "-od", str(out), *extra]
    for key in keys:
        args += ["-k", key]
    env = {**os.environ, "TCP_NODELAY": "1"}
    run = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, env=env)
    return run, [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def _element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00"
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def find_rq(message_id: int, sop_class: str, *, with_identifier: bool = True) -> bytes:
    """A C-FIND-RQ command set (implicit VR little endian), as an SCU writes it."""
    body = b"".join([
        _element(0x00000002, sop_class.encode()), _element(0x00000100, struct.pack("<H", 0x0020)),
        _element(0x00000110, struct.pack("<H", message_id)), _element(0x00000700, struct.pack("<H", 0)),
        _element(0x00000800, struct.pack("<H", 0x0000 if with_identifier else 0x0101)),
    ])
    return _element(0x00000000, struct.pack("<I", len(body))) + body
