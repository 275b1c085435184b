"""What a header reader hands to the record builder: raw bytes of the wanted attributes.

Both readers (the specialised :mod:`dicomflow.extract.fast` parser and the
general :mod:`dicomflow.extract.general` one on top of pydicom) produce the same
:class:`RawHeader`: the undecoded value bytes of the top-level attributes listed
in :data:`WANTED`, with the VR the file declared (``None`` for implicit VR) and
the byte order. All decoding (character sets, dates, numbers) happens once, in
:mod:`dicomflow.extract.records`, so the two readers cannot disagree on values:
they can only disagree on *which bytes* belong to an attribute, and the tests
compare exactly that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# --------------------------------------------------------------------------- tags

SPECIFIC_CHARACTER_SET: Final = 0x00080005
IMAGE_TYPE: Final = 0x00080008
SOP_CLASS_UID: Final = 0x00080016
SOP_INSTANCE_UID: Final = 0x00080018
STUDY_DATE: Final = 0x00080020
SERIES_DATE: Final = 0x00080021
ACQUISITION_DATE: Final = 0x00080022
CONTENT_DATE: Final = 0x00080023
STUDY_TIME: Final = 0x00080030
SERIES_TIME: Final = 0x00080031
CONTENT_TIME: Final = 0x00080033
ACCESSION_NUMBER: Final = 0x00080050
MODALITY: Final = 0x00080060
STUDY_DESCRIPTION: Final = 0x00081030
SERIES_DESCRIPTION: Final = 0x0008103E
PATIENT_NAME: Final = 0x00100010
PATIENT_ID: Final = 0x00100020
PATIENT_BIRTH_DATE: Final = 0x00100030
PATIENT_BIRTH_TIME: Final = 0x00100032
PATIENT_SEX: Final = 0x00100040
PATIENT_AGE: Final = 0x00101010
PATIENT_SIZE: Final = 0x00101020
PATIENT_WEIGHT: Final = 0x00101030
BODY_PART_EXAMINED: Final = 0x00180015
SLICE_THICKNESS: Final = 0x00180050
SPACING_BETWEEN_SLICES: Final = 0x00180088
PROTOCOL_NAME: Final = 0x00181030
STUDY_INSTANCE_UID: Final = 0x0020000D
SERIES_INSTANCE_UID: Final = 0x0020000E
STUDY_ID: Final = 0x00200010
SERIES_NUMBER: Final = 0x00200011
INSTANCE_NUMBER: Final = 0x00200013
IMAGE_POSITION_PATIENT: Final = 0x00200032
IMAGE_ORIENTATION_PATIENT: Final = 0x00200037
SLICE_LOCATION: Final = 0x00201041
SAMPLES_PER_PIXEL: Final = 0x00280002
PHOTOMETRIC_INTERPRETATION: Final = 0x00280004
ROWS: Final = 0x00280010
COLUMNS: Final = 0x00280011
BITS_ALLOCATED: Final = 0x00280100
BITS_STORED: Final = 0x00280101
HIGH_BIT: Final = 0x00280102
PIXEL_REPRESENTATION: Final = 0x00280103
WINDOW_CENTER: Final = 0x00281050
WINDOW_WIDTH: Final = 0x00281051
RESCALE_INTERCEPT: Final = 0x00281052
RESCALE_SLOPE: Final = 0x00281053
RESCALE_TYPE: Final = 0x00281054

TRANSFER_SYNTAX_UID: Final = 0x00020010

#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data,
#: (7FE0,0010) Pixel Data: reading stops at the first of them (as pydicom's
#: ``stop_before_pixels``), the pixel bytes themselves are never read.
PIXEL_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

#: Keyword of each wanted attribute, for messages ("(0008,0020) StudyDate").
KEYWORDS: Final[dict[int, str]] = {
    SPECIFIC_CHARACTER_SET: "SpecificCharacterSet",
    IMAGE_TYPE: "ImageType",
    SOP_CLASS_UID: "SOPClassUID",
    SOP_INSTANCE_UID: "SOPInstanceUID",
    STUDY_DATE: "StudyDate",
    SERIES_DATE: "SeriesDate",
    ACQUISITION_DATE: "AcquisitionDate",
    CONTENT_DATE: "ContentDate",
    STUDY_TIME: "StudyTime",
    SERIES_TIME: "SeriesTime",
    CONTENT_TIME: "ContentTime",
    ACCESSION_NUMBER: "AccessionNumber",
    MODALITY: "Modality",
    STUDY_DESCRIPTION: "StudyDescription",
    SERIES_DESCRIPTION: "SeriesDescription",
    PATIENT_NAME: "PatientName",
    PATIENT_ID: "PatientID",
    PATIENT_BIRTH_DATE: "PatientBirthDate",
    PATIENT_BIRTH_TIME: "PatientBirthTime",
    PATIENT_SEX: "PatientSex",
    PATIENT_AGE: "PatientAge",
    PATIENT_SIZE: "PatientSize",
    PATIENT_WEIGHT: "PatientWeight",
    BODY_PART_EXAMINED: "BodyPartExamined",
    SLICE_THICKNESS: "SliceThickness",
    SPACING_BETWEEN_SLICES: "SpacingBetweenSlices",
    PROTOCOL_NAME: "ProtocolName",
    STUDY_INSTANCE_UID: "StudyInstanceUID",
    SERIES_INSTANCE_UID: "SeriesInstanceUID",
    STUDY_ID: "StudyID",
    SERIES_NUMBER: "SeriesNumber",
    INSTANCE_NUMBER: "InstanceNumber",
    IMAGE_POSITION_PATIENT: "ImagePositionPatient",
    IMAGE_ORIENTATION_PATIENT: "ImageOrientationPatient",
    SLICE_LOCATION: "SliceLocation",
    SAMPLES_PER_PIXEL: "SamplesPerPixel",
    PHOTOMETRIC_INTERPRETATION: "PhotometricInterpretation",
    ROWS: "Rows",
    COLUMNS: "Columns",
    BITS_ALLOCATED: "BitsAllocated",
    BITS_STORED: "BitsStored",
    HIGH_BIT: "HighBit",
    PIXEL_REPRESENTATION: "PixelRepresentation",
    WINDOW_CENTER: "WindowCenter",
    WINDOW_WIDTH: "WindowWidth",
    RESCALE_INTERCEPT: "RescaleIntercept",
    RESCALE_SLOPE: "RescaleSlope",
    RESCALE_TYPE: "RescaleType",
}

#: The top-level attributes a reader must capture.
WANTED: Final = frozenset(KEYWORDS)

#: Transfer syntaxes named by the dataset's own encoding, for files without
#: (0002,0010): keyed by (implicit VR, little endian).
ENCODING_TS: Final[dict[tuple[bool, bool], str]] = {
    (True, True): "1.2.840.10008.1.2",  # Implicit VR Little Endian
    (False, True): "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    (False, False): "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
}


def tag_name(tag: int) -> str:
    """``(0008,0020) StudyDate``: how messages name an attribute."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {KEYWORDS.get(tag, '')}".rstrip()


# --------------------------------------------------------------------------- result


@dataclass(slots=True)
class RawHeader:
    """The undecoded header of one file, as a reader found it.

    ``elements`` maps a tag of :data:`WANTED` to ``(vr, value)``: the VR as
    written in the file (``None`` under implicit VR, where the dictionary VR
    applies) and the raw value bytes, padding included. ``transfer_syntax_uid``
    is (0002,0010) when the file has it, else the one its encoding shows.
    """

    transfer_syntax_uid: str
    little_endian: bool
    file_size: int
    elements: dict[int, tuple[str | None, bytes]] = field(default_factory=dict)


class TruncatedError(Exception):
    """The file ends inside an element: a reader's way to say "truncated here"."""


__all__ = [
    "ENCODING_TS",
    "KEYWORDS",
    "PIXEL_TAGS",
    "WANTED",
    "RawHeader",
    "TruncatedError",
    "tag_name",
]
