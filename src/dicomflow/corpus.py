"""Test and benchmark corpora: real DICOM files with fresh UIDs, and their store events.

:func:`make_corpus` writes ``instances`` files spread over ``studies`` x
``series_per_study`` series under a storage root, the way the receiver lays
them out (``root/tenant/study/series/sop.dcm``), each a copy of one of
pydicom's bundled sample images (``CT_small.dcm``, ``MR_small.dcm``) with new
Study / Series / SOP Instance UIDs made by pydicom's ``generate_uid``, a
patient per study and an accession number. It returns one
:class:`~dicomflow.models.DicomStoreMeta` per file, in series order, ready
to publish to storage_queue.

Used by the demo (which is why it ships in the package), the integration
tests and the benchmarks; the fault-injection suite's faster generator of
tiny instances is in the repository's ``faults/`` folder. It never
downloads anything: the templates are globbed from pydicom's ``data``
folder (``pydicom.data.get_testdata_files`` may try the network).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from dicomflow.models import DicomStoreMeta, now, uid_hash

if TYPE_CHECKING:
    from pydicom.dataset import Dataset, FileDataset

#: The default templates: small, uncompressed, with every attribute the consumer extracts.
DEFAULT_TEMPLATES: tuple[str, ...] = ("CT_small.dcm", "MR_small.dcm")


def pydicom_sample(name: str) -> Path:
    """Path of one of pydicom's bundled test files (no download).

    Raises:
        FileNotFoundError: pydicom's data folder has no such file.
    """
    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / name
    if not path.is_file():
        raise FileNotFoundError(f"pydicom sample {name} not found at {path}")
    return path


@dataclass(frozen=True)
class SeriesInfo:
    """One generated series (what a test needs to check its rows)."""

    tenant_id: str
    patient_id: str
    study_uid: str
    series_uid: str
    instances: int


@dataclass(frozen=True)
class Corpus:
    """The generated files' store events and series."""

    events: list[DicomStoreMeta]
    series: list[SeriesInfo]

    @property
    def studies(self) -> set[str]:
        """Distinct Study Instance UIDs."""
        return {s.study_uid for s in self.series}


def make_corpus(
    root: Path,
    instances: int,
    *,
    studies: int = 1,
    series_per_study: int = 1,
    tenant_id: str = "default",
    templates: Sequence[str | Path] = DEFAULT_TEMPLATES,
    worker_node_id: str = "corpus",
    created_time: dt.datetime | None = None,
) -> Corpus:
    """Write ``instances`` DICOM files under ``root`` and return their store events.

    Instances are spread as evenly as possible over the
    ``studies * series_per_study`` series (a series may get none when there
    are more series than instances); series ``i`` uses template
    ``i % len(templates)``. ``created_time`` defaults to the moment each
    event is built.

    Raises:
        ValueError: a count below its minimum.
        FileNotFoundError: a template is missing.
    """
    if instances < 0 or studies < 1 or series_per_study < 1 or not templates:
        raise ValueError("need instances >= 0, studies >= 1, series_per_study >= 1 and a template")
    import pydicom
    from pydicom.uid import generate_uid

    paths = [Path(t) if Path(t).is_file() else pydicom_sample(str(t)) for t in templates]
    datasets = [pydicom.dcmread(p) for p in paths]
    run = uuid.uuid4().hex[:8].upper()
    n_series = studies * series_per_study
    per_series = [instances // n_series + (1 if i < instances % n_series else 0) for i in range(n_series)]
    events: list[DicomStoreMeta] = []
    series: list[SeriesInfo] = []
    for study_index in range(studies):
        study_uid = generate_uid()
        patient_id = f"P{run}-{study_index:05d}"
        accession = f"A{run}{study_index:05d}"[:16]
        for series_index in range(series_per_study):
            flat = study_index * series_per_study + series_index
            ds = datasets[flat % len(datasets)]
            ds.PatientID = patient_id
            ds.AccessionNumber = accession
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = generate_uid()
            ds.SeriesNumber = series_index + 1
            writer = _SeriesWriter(ds)
            folder = root / tenant_id / study_uid / str(ds.SeriesInstanceUID)
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(1, per_series[flat] + 1):
                sop_uid = str(generate_uid())
                path = folder / f"{sop_uid}.dcm"
                writer.write(path, sop_uid, number)
                events.append(writer.event(path, sop_uid, tenant_id, worker_node_id, created_time))
            series.append(SeriesInfo(tenant_id, patient_id, study_uid, str(ds.SeriesInstanceUID), per_series[flat]))
    return Corpus(events, series)


class _SeriesWriter:
    """Writes the instances of one series fast: the series' constant bytes are encoded once.

    Per instance only the SOP Instance UID (file meta and dataset) and the
    Instance Number change; everything else is the bytes pydicom wrote for
    the template, so each file is byte for byte what ``Dataset.save_as``
    would write (a unit test checks it), ten times faster.
    """

    def __init__(self, ds: FileDataset) -> None:
        import copy

        self.ds = ds
        ts = ds.file_meta.TransferSyntaxUID
        self.implicit = bool(ts.is_implicit_VR)
        self.little = bool(ts.is_little_endian)
        self.meta = copy.deepcopy(ds.file_meta)
        self.preamble = (ds.preamble or b"\0" * 128) + b"DICM"
        self.head = self._encode(ds[:0x00080018])
        self.mid = self._encode(ds[0x00080019:0x00200013])
        self.tail = self._encode(ds[0x00200014:])
        self.template = store_event(Path("/"), ds, "", file_size=0)

    def _encode(self, ds: Dataset) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset

        fp = DicomBytesIO()
        fp.is_implicit_VR = self.implicit
        fp.is_little_endian = self.little
        write_dataset(fp, ds)
        return bytes(fp.getvalue())

    def write(self, path: Path, sop_uid: str, number: int) -> None:
        """Write the instance ``sop_uid`` with Instance Number ``number`` to ``path``."""
        from pydicom.dataset import Dataset
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info
        from pydicom.uid import UID

        self.meta.MediaStorageSOPInstanceUID = UID(sop_uid)
        fp = DicomBytesIO()
        fp.write(self.preamble)
        write_file_meta_info(fp, self.meta, enforce_standard=True)
        sop = Dataset()
        sop.SOPInstanceUID = sop_uid
        inst = Dataset()
        inst.InstanceNumber = number
        path.write_bytes(b"".join((fp.getvalue(), self.head, self._encode(sop), self.mid, self._encode(inst), self.tail)))

    def event(
        self, path: Path, sop_uid: str, tenant_id: str, worker_node_id: str, created_time: dt.datetime | None
    ) -> DicomStoreMeta:
        """The store event of an instance written by :meth:`write`."""
        return msgspec.structs.replace(
            self.template,
            trace_id=str(uuid.uuid4()),
            worker_node_id=worker_node_id,
            tenant_id=tenant_id,
            sop_uid=sop_uid,
            file_size=path.stat().st_size,
            file_path=str(path.resolve()),
            created_time=created_time or now(),
        )


def store_event(
    path: Path,
    ds: FileDataset,
    tenant_id: str,
    *,
    worker_node_id: str = "corpus",
    created_time: dt.datetime | None = None,
    source_ip: str = "127.0.0.1",
    source_ae: str = "CORPUS",
    file_size: int | None = None,
) -> DicomStoreMeta:
    """The store event the receiver would publish for the file ``path`` holding ``ds``."""
    ts = str(ds.file_meta.TransferSyntaxUID)
    raw_date = str(ds.get("StudyDate", "") or "")
    try:
        study_date = dt.datetime.strptime(raw_date[:8], "%Y%m%d").date()
    except ValueError:
        study_date = (created_time or now()).date()
    study_uid = str(ds.StudyInstanceUID)
    series_uid = str(ds.SeriesInstanceUID)
    return DicomStoreMeta(
        trace_id=str(uuid.uuid4()),
        worker_node_id=worker_node_id,
        tenant_id=tenant_id,
        patient_id=str(ds.get("PatientID", "") or ""),
        study_uid=study_uid,
        series_uid=series_uid,
        sop_uid=str(ds.SOPInstanceUID),
        file_size=path.stat().st_size if file_size is None else file_size,
        file_path=str(path.resolve()),
        transfer_syntax_uid=ts,
        number_of_frames=int(ds.get("NumberOfFrames", 1) or 1),
        created_time=created_time or now(),
        series_uid_hash=uid_hash(series_uid),
        study_uid_hash=uid_hash(study_uid),
        accession_number=str(ds.get("AccessionNumber", "") or "") or None,
        target_ts=ts,
        study_date=study_date,
        transfer_status="NoNeedTransfer",
        source_ip=source_ip,
        source_ae=source_ae,
    )


__all__ = ["DEFAULT_TEMPLATES", "Corpus", "SeriesInfo", "make_corpus", "pydicom_sample", "store_event"]
