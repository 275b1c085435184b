"""Small real DICOM files written with pydicom, for extraction tests.

Values are written without pydicom's validation so a test can put exactly
the broken value it wants into a file.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import config
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

STUDY_UID = "1.2.826.0.1.3680043.8.498.1"
SERIES_UID = "1.2.826.0.1.3680043.8.498.1.1"
SOP_UID = "1.2.826.0.1.3680043.8.498.1.1.1"

_placeholders = itertools.count(7_341_000_000)


@dataclass(frozen=True)
class Raw:
    """A value written byte for byte, even one pydicom refuses to hold (``PatientWeight=Raw("heavy ")``).

    It is written as a placeholder of digits of the same length, which is then
    replaced in the file's bytes.
    """

    text: str

    def placeholder(self) -> str:
        digits = str(next(_placeholders))
        return (digits * (len(self.text) // len(digits) + 1))[-len(self.text) :]


TRANSFER_SYNTAXES = {
    "implicit": ImplicitVRLittleEndian,
    "explicit": ExplicitVRLittleEndian,
    "big": ExplicitVRBigEndian,
}


def ct_dataset(**attrs: Any) -> Dataset:
    """A minimal CT image header; ``attrs`` override or add keywords (``None`` removes one)."""
    ds = Dataset()
    values: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 100",
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
        "SOPClassUID": CTImageStorage,
        "SOPInstanceUID": SOP_UID,
        "StudyDate": "20240102",
        "SeriesDate": "20240103",
        "ContentDate": "20240104",
        "AcquisitionDate": "20240105",
        "StudyTime": "101500",
        "Modality": "CT",
        "PatientName": "Doe^John",
        "PatientID": "P-1",
        "PatientSex": "M",
        "StudyInstanceUID": STUDY_UID,
        "SeriesInstanceUID": SERIES_UID,
        "SeriesNumber": "3",
        "InstanceNumber": "7",
        "ImagePositionPatient": ["-125.0", "-125.0", "10.5"],
        "SliceThickness": "2.5",
        "SamplesPerPixel": 1,
        "PhotometricInterpretation": "MONOCHROME2",
        "Rows": 4,
        "Columns": 2,
        "BitsAllocated": 16,
        "BitsStored": 12,
        "HighBit": 11,
        "PixelRepresentation": 0,
        "WindowCenter": "40",
        "WindowWidth": "400",
        "RescaleIntercept": "-1024",
        "RescaleSlope": "1",
        "PixelData": b"\x00\x01" * 8,
    }
    values.update(attrs)
    patches: dict[bytes, bytes] = {}
    with config.disable_value_validation():
        for keyword, value in values.items():
            if isinstance(value, Raw):
                placeholder = value.placeholder()
                patches[placeholder.encode()] = value.text.encode()
                value = placeholder
            if value is not None:
                setattr(ds, keyword, value)
    ds.raw_patches = patches  # applied by write()
    return ds


def write(path: Path, ds: Dataset, *, syntax: str = "explicit", meta: bool = True) -> Path:
    """Write ``ds`` as a Part 10 file (``meta``) or as a raw dataset without preamble and meta."""
    ts = TRANSFER_SYNTAXES[syntax]
    patches: dict[bytes, bytes] = getattr(ds, "raw_patches", {})
    with config.disable_value_validation(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an unknown character set, on purpose
        if meta:
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ts
            ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID") or CTImageStorage
            ds.file_meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID") or generate_uid()
            ds.preamble = b"\x00" * 128
            ds.save_as(path, enforce_file_format=True)
        else:
            ds.save_as(path, implicit_vr=ts.is_implicit_VR, little_endian=ts.is_little_endian)
    if patches:
        content = path.read_bytes()
        for placeholder, text in patches.items():
            assert content.count(placeholder) == 1, placeholder
            content = content.replace(placeholder, text)
        path.write_bytes(content)
    return path


def item(**attrs: Any) -> Dataset:
    """A sequence item with the given keywords."""
    ds = Dataset()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    return ds


def undefined_lengths(ds: Dataset) -> Dataset:
    """Mark every sequence and item of ``ds``, recursively, to be written with undefined length."""
    for elem in ds:
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for child in elem.value:
                child.is_undefined_length_sequence_item = True
                undefined_lengths(child)
    return ds


def nested_sequences() -> dict[str, Any]:
    """Attributes with sequences two levels deep, placed before the wanted attributes."""
    code = item(CodeValue="T-D0050", CodingSchemeDesignator="SRT", CodeMeaning="Tissue")
    return {
        "ReferencedImageSequence": Sequence(
            [
                item(ReferencedSOPClassUID=CTImageStorage, ReferencedSOPInstanceUID=generate_uid()),
                item(
                    ReferencedSOPClassUID=CTImageStorage,
                    ReferencedSOPInstanceUID=generate_uid(),
                    PurposeOfReferenceCodeSequence=Sequence([code, code]),
                ),
            ]
        ),
        "AnatomicRegionSequence": Sequence([code]),
        "ProcedureCodeSequence": Sequence([]),
    }
