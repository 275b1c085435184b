"""Many small synthetic DICOM instances, fast: one encoded template, UIDs patched in.

The fault run sends >= 20,000 instances and the soak needs >= 100,000
distinct files. :func:`dicomflow.corpus.make_corpus` writes real sample
images (10-40 KB) at about 0.8 ms per file; here each file is a 32x32 CT or
MR image of about 3 KB, and a file costs a few byte substitutions and one
``write``, so 100,000 files take seconds, not minutes.

How: the template data set is encoded once by pydicom with *placeholder*
values of fixed width (UIDs of 47 characters, Patient ID, Accession Number,
Series and Instance Number of fixed width). Every generated value has
exactly the width of its placeholder, so substituting bytes never changes an
element's length and the file stays valid Part 10 (a unit test reads the
output back with pydicom). The UIDs are fresh for every run (a random
8-digit run number is part of each UID) and are valid UIDs: digits and dots,
no component with a leading zero.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from dicomflow.corpus import SeriesInfo
from dicomflow.dicom.constants import EXPLICIT_VR_LE
from dicomflow.models import DicomStoreMeta, now, uid_hash

#: pydicom's UID root (what ``generate_uid`` uses); ours follow with run.kind.counter.
UID_ROOT = "1.2.826.0.1.3680043.8.498."
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
STUDY_DATE = dt.date(2024, 3, 15)

_KIND_STUDY, _KIND_SERIES, _KIND_SOP = 1, 2, 3
#: The placeholders' run number; a real run number is drawn from 10**7 .. 10**8 - 1.
_PLACEHOLDER_RUN = 99999999
_SIDE = 32


def make_uid(run: int, kind: int, counter: int) -> str:
    """A 47-character UID ``<root><run>.<kind>.<1e9 + counter>``, valid and fixed width.

    Raises:
        ValueError: a run or counter out of the fixed-width range.
    """
    if not 10**7 <= run < 10**8 or not 0 <= counter < 8 * 10**9 or not 1 <= kind <= 9:
        raise ValueError(f"run {run}, kind {kind} or counter {counter} out of range")
    return f"{UID_ROOT}{run}.{kind}.{10**9 + counter}"


def _patient_id(run: int, study: int) -> str:
    return f"FP{run}{study:06d}"  # 16 characters (LO)


def _accession(run: int, study: int) -> str:
    return f"FA{run}{study:06d}"  # 16 characters (SH, the wire format's limit)


@dataclass(frozen=True)
class Template:
    """One encoded Part 10 file with placeholders, and the offsets-free recipe to fill them."""

    modality: str
    sop_class_uid: str
    data: bytes
    #: placeholder bytes -> how many times each must occur (checked at build time).
    placeholders: dict[str, bytes] = field(default_factory=dict)

    def fill(self, *, study_uid: str, series_uid: str, sop_uid: str, patient_id: str, accession: str,
             series_number: int, instance_number: int) -> bytes:
        """The file bytes with every placeholder replaced by a value of the same width."""
        out = self.data
        values = {
            "study": study_uid, "series": series_uid, "sop": sop_uid, "patient": patient_id,
            "accession": accession, "series_number": f"{series_number:06d}",
            "instance_number": f"{instance_number:06d}",
        }
        for name, raw in self.placeholders.items():
            new = values[name].encode("ascii")
            out = out.replace(raw, new)
        return out


def _pixels() -> bytes:
    """A 32x32 16-bit gradient whose bytes are never ASCII digits or letters.

    Why: the placeholders are ASCII; pixel bytes that could spell one would be
    patched too. High byte 0x0A, low byte 0xA0 .. 0xEF: not ASCII text.
    """
    out = bytearray()
    for y in range(_SIDE):
        for x in range(_SIDE):
            out += bytes((0xA0 + (x + y) % 0x50, 0x0A))
    return bytes(out)


def build_template(modality: str) -> Template:
    """Encode a small CT or MR image with placeholder values, once per run.

    Raises:
        ValueError: an unknown modality, or a placeholder not found exactly
            where expected in the encoded bytes (a pydicom change would show here).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import UID

    sop_class = {"CT": CT_IMAGE_STORAGE, "MR": MR_IMAGE_STORAGE}.get(modality)
    if sop_class is None:
        raise ValueError(f"no template for modality {modality!r}")
    ph = {
        "study": make_uid(_PLACEHOLDER_RUN, _KIND_STUDY, 0),
        "series": make_uid(_PLACEHOLDER_RUN, _KIND_SERIES, 0),
        "sop": make_uid(_PLACEHOLDER_RUN, _KIND_SOP, 0),
        "patient": "FPXXXXXXXXXXXXXX",
        "accession": "FAXXXXXXXXXXXXXX",
        "series_number": "888888",
        "instance_number": "777777",
    }
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(ph["sop"])
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ph["sop"]
    ds.StudyDate = STUDY_DATE.strftime("%Y%m%d")
    ds.SeriesDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.StudyTime = "101500"
    ds.SeriesTime = "101600"
    ds.ContentTime = "101700"
    ds.AccessionNumber = ph["accession"]
    ds.Modality = modality
    ds.StudyDescription = "FAULT INJECTION"
    ds.SeriesDescription = f"SYNTHETIC {modality}"
    ds.PatientName = "Faults^Synthetic"
    ds.PatientID = ph["patient"]
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.0"
    ds.StudyInstanceUID = ph["study"]
    ds.SeriesInstanceUID = ph["series"]
    ds.StudyID = "1"
    ds.add_new(0x00200011, "IS", ph["series_number"])
    ds.add_new(0x00200013, "IS", ph["instance_number"])
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = _SIDE
    ds.Columns = _SIDE
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = "1400"
    ds.WindowWidth = "800"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.PixelData = _pixels()
    fp = DicomBytesIO()
    dcmwrite(fp, ds, enforce_file_format=True)
    data = bytes(fp.getvalue())
    placeholders = {name: value.encode("ascii") for name, value in ph.items()}
    for name, raw in placeholders.items():
        expected = 2 if name == "sop" else 1
        if data.count(raw) != expected:
            raise ValueError(f"placeholder {name} occurs {data.count(raw)} times in the {modality} template, not {expected}")
    return Template(modality, sop_class, data, placeholders)


@dataclass(frozen=True, slots=True)
class Instance:
    """One generated file and the store event a receiver would publish for it."""

    path: Path
    event: DicomStoreMeta

    @property
    def sop_uid(self) -> str:
        return self.event.sop_uid


@dataclass
class Generated:
    """What :func:`generate` wrote."""

    instances: list[Instance]
    series: list[SeriesInfo]

    @property
    def sop_uids(self) -> set[str]:
        return {i.event.sop_uid for i in self.instances}


def spread(total: int, rng: random.Random, min_per_series: int = 20, max_per_series: int = 80,
           max_series_per_study: int = 3) -> Iterator[tuple[int, int, int]]:
    """``(study, series, instances)`` triples summing to ``total``: many studies, uneven series.

    Why uneven: equal series would hide an off-by-one in series_related_instances.
    """
    left, study, series = total, 0, 0
    while left > 0:
        for _ in range(rng.randint(1, max_series_per_study)):
            if left <= 0:
                break
            n = min(left, rng.randint(min_per_series, max_per_series))
            yield study, series, n
            left -= n
            series += 1
        study += 1


def generate(
    root: Path,
    total: int,
    *,
    seed: int = 0,
    tenant_id: str = "default",
    worker_node_id: str = "faults",
    received: dt.datetime | None = None,
    min_per_series: int = 20,
    max_per_series: int = 80,
) -> Generated:
    """Write ``total`` instances under ``root`` as ``tenant/study/series/sop.dcm``, with their store events.

    Instances are spread over many studies (1-3 series each, 20-80
    instances per series by default), alternating CT and MR series. The
    layout is the receiver's, so the files can be used as received files
    (soak, fuzz) or sent from this folder to a receiver (fault run).

    Raises:
        OSError: the folder cannot be written.
    """
    rng = random.Random(seed)
    run = random.SystemRandom().randrange(10**7, 10**8)
    templates = [build_template("CT"), build_template("MR")]
    when = received or now()
    instances: list[Instance] = []
    series_out: list[SeriesInfo] = []
    counter = 0
    for study, series, count in spread(total, rng, min_per_series, max_per_series):
        template = templates[series % 2]
        study_uid = make_uid(run, _KIND_STUDY, study)
        series_uid = make_uid(run, _KIND_SERIES, series)
        patient_id = _patient_id(run, study)
        accession = _accession(run, study)
        folder = root / tenant_id / study_uid / series_uid
        folder.mkdir(parents=True, exist_ok=True)
        base = DicomStoreMeta(
            trace_id=str(uuid.uuid4()), worker_node_id=worker_node_id, tenant_id=tenant_id,
            patient_id=patient_id, study_uid=study_uid, series_uid=series_uid, sop_uid="",
            file_size=len(template.data), file_path="", transfer_syntax_uid=EXPLICIT_VR_LE,
            number_of_frames=1, created_time=when, series_uid_hash=uid_hash(series_uid),
            study_uid_hash=uid_hash(study_uid), accession_number=accession, target_ts=EXPLICIT_VR_LE,
            study_date=STUDY_DATE, transfer_status="NoNeedTransfer", source_ip="127.0.0.1", source_ae="FAULTS",
        )
        for number in range(1, count + 1):
            sop_uid = make_uid(run, _KIND_SOP, counter)
            counter += 1
            path = folder / f"{sop_uid}.dcm"
            path.write_bytes(template.fill(
                study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, patient_id=patient_id,
                accession=accession, series_number=series + 1, instance_number=number,
            ))
            event = _replace(base, sop_uid=sop_uid, file_path=str(path))
            instances.append(Instance(path, event))
        series_out.append(SeriesInfo(tenant_id, patient_id, study_uid, series_uid, count))
    return Generated(instances, series_out)


def _replace(base: DicomStoreMeta, *, sop_uid: str, file_path: str) -> DicomStoreMeta:
    """A copy of ``base`` for one instance, with its own trace id (msgspec ``replace``)."""
    import msgspec

    return msgspec.structs.replace(base, trace_id=str(uuid.uuid4()), sop_uid=sop_uid, file_path=file_path)


__all__ = ["Generated", "Instance", "Template", "build_template", "generate", "make_uid", "spread"]
