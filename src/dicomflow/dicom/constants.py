"""The DICOM vocabulary dicomflow uses, defined once: transfer syntaxes, VRs, lengths, tags.

Every module that reads or writes encoded DICOM takes its constants from
here (PS3.5 for VRs and encodings, PS3.6 for tags, PS3.10 for the file
meta group), so two readers cannot disagree on, say, which VRs carry a
32-bit length.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Final

# --------------------------------------------------------------------------- transfer syntaxes

IMPLICIT_VR_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LE: Final = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BE: Final = "1.2.840.10008.1.2.2"
JPEG_BASELINE: Final = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED: Final = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS: Final = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1: Final = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS: Final = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS: Final = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS: Final = "1.2.840.10008.1.2.4.90"
JPEG_2000: Final = "1.2.840.10008.1.2.4.91"
RLE_LOSSLESS: Final = "1.2.840.10008.1.2.5"

#: The transfer syntaxes whose pixel data is native (not encapsulated).
NATIVE_SYNTAXES: Final = frozenset({IMPLICIT_VR_LE, EXPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE})


@dataclass(frozen=True, slots=True)
class TransferSyntax:
    """How a data set in one transfer syntax is encoded.

    Every syntax other than Implicit VR Little Endian and Explicit VR Big
    Endian is explicit VR little endian: compression only changes the pixel
    data (encapsulated), deflate the whole data set.
    """

    uid: str
    implicit: bool
    little: bool
    deflated: bool
    encapsulated: bool


@lru_cache(maxsize=256)
def transfer_syntax(uid: str) -> TransferSyntax:
    """The encoding properties of the transfer syntax ``uid`` (unknown ones are explicit VR LE, encapsulated)."""
    return TransferSyntax(
        uid=uid,
        implicit=uid == IMPLICIT_VR_LE,
        little=uid != EXPLICIT_VR_BE,
        deflated=uid == DEFLATED_EXPLICIT_VR_LE,
        encapsulated=uid not in NATIVE_SYNTAXES,
    )


#: Transfer syntaxes named by a data set's own encoding, for files without
#: (0002,0010): keyed by (implicit VR, little endian).
ENCODING_TS: Final[dict[tuple[bool, bool], str]] = {
    (True, True): IMPLICIT_VR_LE,
    (False, True): EXPLICIT_VR_LE,
    (False, False): EXPLICIT_VR_BE,
}

# --------------------------------------------------------------------------- value representations

#: Explicit-VR value representations with a 2-byte reserved field and a 4-byte length.
LONG_VR_NAMES: Final = ("OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV")
#: Explicit-VR value representations with a 2-byte length.
SHORT_VR_NAMES: Final = (
    "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US",
)
LONG_VRS: Final = frozenset(vr.encode() for vr in LONG_VR_NAMES)
SHORT_VRS: Final = frozenset(vr.encode() for vr in SHORT_VR_NAMES)
#: Every value representation of PS3.5 (to tell explicit from implicit VR encoding).
ALL_VRS: Final = LONG_VRS | SHORT_VRS
#: VR bytes as written → VR name.
VR_NAMES: Final[dict[bytes, str]] = {vr.encode(): vr for vr in LONG_VR_NAMES + SHORT_VR_NAMES}
#: VRs the Specific Character Set applies to (PS3.5 6.1.2.3); every other string VR is the default repertoire.
TEXT_VRS: Final = frozenset({"SH", "LO", "UC", "ST", "LT", "UT", "PN"})
#: Numbers written as text.
TEXT_NUMBER_VRS: Final = frozenset({"IS", "DS"})
#: Binary numbers and their struct format characters.
BINARY_NUMBER_VRS: Final[dict[str, str]] = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d",
                                           "UV": "Q", "SV": "q"}

# --------------------------------------------------------------------------- lengths and delimiters

#: The undefined length (PS3.5 7.1.1): a sequence or item ended by a delimiter.
UNDEFINED_LENGTH: Final = 0xFFFFFFFF
ITEM: Final = 0xFFFEE000
ITEM_DELIMITER: Final = 0xFFFEE00D
SEQUENCE_DELIMITER: Final = 0xFFFEE0DD

# --------------------------------------------------------------------------- Part 10

PREAMBLE_LENGTH: Final = 128
PREFIX: Final = b"DICM"
FILE_META_GROUP: Final = 0x0002
TRANSFER_SYNTAX_UID: Final = 0x00020010
MEDIA_STORAGE_SOP_CLASS_UID: Final = 0x00020002
MEDIA_STORAGE_SOP_INSTANCE_UID: Final = 0x00020003

# --------------------------------------------------------------------------- data set tags

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
NUMBER_OF_FRAMES: Final = 0x00280008
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

#: (7FE0,0008) Float Pixel Data, (7FE0,0009) Double Float Pixel Data,
#: (7FE0,0010) Pixel Data: reading stops at the first of them (as pydicom's
#: ``stop_before_pixels``); the pixel bytes themselves are never read.
PIXEL_TAGS: Final = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})

#: Keyword of each attribute dicomflow reads, for messages ("(0008,0020) StudyDate").
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
    NUMBER_OF_FRAMES: "NumberOfFrames",
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

#: The top-level attributes every header read captures (ingest adds its tenant tag).
WANTED: Final = frozenset(KEYWORDS)


def tag_name(tag: int) -> str:
    """``(0008,0020) StudyDate``: how messages name an attribute."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {KEYWORDS.get(tag, '')}".rstrip()


__all__ = [
    "ALL_VRS", "BINARY_NUMBER_VRS", "DEFLATED_EXPLICIT_VR_LE", "ENCODING_TS", "EXPLICIT_VR_BE", "EXPLICIT_VR_LE",
    "IMPLICIT_VR_LE", "ITEM", "ITEM_DELIMITER", "JPEG_2000", "JPEG_2000_LOSSLESS", "JPEG_BASELINE", "JPEG_EXTENDED",
    "JPEG_LOSSLESS", "JPEG_LOSSLESS_SV1", "JPEG_LS_LOSSLESS", "JPEG_LS_NEAR_LOSSLESS", "KEYWORDS", "LONG_VRS",
    "LONG_VR_NAMES", "NATIVE_SYNTAXES", "PIXEL_TAGS", "PREFIX", "RLE_LOSSLESS", "SEQUENCE_DELIMITER", "SHORT_VRS",
    "SHORT_VR_NAMES", "TEXT_NUMBER_VRS", "TEXT_VRS", "TRANSFER_SYNTAX_UID", "UNDEFINED_LENGTH", "VR_NAMES", "WANTED",
    "TransferSyntax", "tag_name", "transfer_syntax",
]
