"""The Query/Retrieve Information Models C-FIND answers (PS3.4 C.6), and the index's attributes at each level.

Two models: Patient Root (levels PATIENT, STUDY, SERIES, IMAGE) and Study Root
(STUDY, SERIES, IMAGE: the patient's attributes are study attributes there).
Each attribute the index holds is listed once in :data:`ATTRIBUTES`: its tag,
VR, the level it belongs to in the Patient Root model, the column of a result
row that answers it, and how a value in an identifier is matched (None: a
return key only, never matched). Attributes not listed are still answered, as
empty values (PS3.4 C.4.1.1.3.2: a key the SCP does not support).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Level = Literal["PATIENT", "STUDY", "SERIES", "IMAGE"]
ModelName = Literal["patient", "study"]
#: How an identifier's value is matched (PS3.4 C.2.2.2): ``text`` single value or wildcard (case-sensitive),
#: ``pn`` the same case-insensitive, ``date`` / ``time`` single value or range, ``uid`` single value or list,
#: ``int`` single value, ``modality`` any of a list of code strings.
Match = Literal["text", "pn", "date", "time", "uid", "int", "modality"]

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
#: The FIND SOP classes served, and their information model.
FIND_SOP_CLASSES: dict[str, ModelName] = {PATIENT_ROOT_FIND: "patient", STUDY_ROOT_FIND: "study"}
#: The levels of each model, top down.
LEVELS: dict[ModelName, tuple[Level, ...]] = {
    "patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    "study": ("STUDY", "SERIES", "IMAGE"),
}
#: The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEYS: dict[Level, str] = {
    "PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID",
}

SPECIFIC_CHARACTER_SET = 0x00080005
QUERY_RETRIEVE_LEVEL = 0x00080052
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
#: What every answer says its text is in: UTF-8 (the index holds Unicode text).
ANSWER_CHARACTER_SET = "ISO_IR 192"


@dataclass(frozen=True)
class Attribute:
    """One attribute the index can answer (and maybe match)."""

    keyword: str
    tag: int
    vr: str
    #: Its level in the Patient Root model (PATIENT attributes are STUDY attributes in Study Root).
    level: Level
    #: The key of a result row holding its value.
    column: str
    #: How a value is matched; None: a return key only.
    match: Match | None = None

    def level_in(self, model: ModelName) -> Level:
        return "STUDY" if model == "study" and self.level == "PATIENT" else self.level


def _a(keyword: str, tag: int, vr: str, level: Level, column: str, match: Match | None = None) -> Attribute:
    return Attribute(keyword, tag, vr, level, column, match)


#: Every attribute the index holds, by tag.
ATTRIBUTES: dict[int, Attribute] = {a.tag: a for a in (
    _a("PatientName", 0x00100010, "PN", "PATIENT", "patient_name", "pn"),
    _a("PatientID", 0x00100020, "LO", "PATIENT", "patient_id", "text"),
    _a("PatientBirthDate", 0x00100030, "DA", "PATIENT", "patient_birth_date", "date"),
    _a("PatientBirthTime", 0x00100032, "TM", "PATIENT", "patient_birth_time", "time"),
    _a("PatientSex", 0x00100040, "CS", "PATIENT", "patient_sex", "text"),
    _a("NumberOfPatientRelatedStudies", 0x00201200, "IS", "PATIENT", "n_studies"),
    _a("NumberOfPatientRelatedSeries", 0x00201202, "IS", "PATIENT", "n_series"),
    _a("NumberOfPatientRelatedInstances", 0x00201204, "IS", "PATIENT", "n_instances"),
    _a("StudyDate", 0x00080020, "DA", "STUDY", "study_date", "date"),
    _a("StudyTime", 0x00080030, "TM", "STUDY", "study_time", "time"),
    _a("AccessionNumber", 0x00080050, "SH", "STUDY", "accession_number", "text"),
    _a("ModalitiesInStudy", 0x00080061, "CS", "STUDY", "modalities", "modality"),
    _a("StudyDescription", 0x00081030, "LO", "STUDY", "study_description", "text"),
    _a("PatientAge", 0x00101010, "AS", "STUDY", "patient_age", "text"),
    _a("PatientSize", 0x00101020, "DS", "STUDY", "patient_size"),
    _a("PatientWeight", 0x00101030, "DS", "STUDY", "patient_weight"),
    _a("StudyInstanceUID", 0x0020000D, "UI", "STUDY", "study_uid", "uid"),
    _a("StudyID", 0x00200010, "SH", "STUDY", "study_id", "text"),
    _a("NumberOfStudyRelatedSeries", 0x00201206, "IS", "STUDY", "n_series"),
    _a("NumberOfStudyRelatedInstances", 0x00201208, "IS", "STUDY", "n_instances"),
    _a("SeriesDate", 0x00080021, "DA", "SERIES", "series_date", "date"),
    _a("SeriesTime", 0x00080031, "TM", "SERIES", "series_time", "time"),
    _a("Modality", 0x00080060, "CS", "SERIES", "modality", "modality"),
    _a("SeriesDescription", 0x0008103E, "LO", "SERIES", "series_description", "text"),
    _a("BodyPartExamined", 0x00180015, "CS", "SERIES", "body_part_examined", "text"),
    _a("ProtocolName", 0x00181030, "LO", "SERIES", "protocol_name", "text"),
    _a("SeriesInstanceUID", 0x0020000E, "UI", "SERIES", "series_uid", "uid"),
    _a("SeriesNumber", 0x00200011, "IS", "SERIES", "series_number", "int"),
    _a("NumberOfSeriesRelatedInstances", 0x00201209, "IS", "SERIES", "series_related_instances"),
    _a("ImageType", 0x00080008, "CS", "IMAGE", "image_type"),
    _a("SOPClassUID", 0x00080016, "UI", "IMAGE", "sop_class_uid", "uid"),
    _a("SOPInstanceUID", 0x00080018, "UI", "IMAGE", "sop_uid", "uid"),
    _a("ContentDate", 0x00080023, "DA", "IMAGE", "content_date", "date"),
    _a("ContentTime", 0x00080033, "TM", "IMAGE", "content_time", "time"),
    _a("InstanceNumber", 0x00200013, "IS", "IMAGE", "instance_number", "int"),
    _a("PhotometricInterpretation", 0x00280004, "CS", "IMAGE", "photometric_interpretation"),
    _a("NumberOfFrames", 0x00280008, "IS", "IMAGE", "number_of_frames"),
    _a("Rows", 0x00280010, "US", "IMAGE", "rows"),
    _a("Columns", 0x00280011, "US", "IMAGE", "columns"),
    _a("BitsAllocated", 0x00280100, "US", "IMAGE", "bits_allocated"),
)}

BY_KEYWORD: dict[str, Attribute] = {a.keyword: a for a in ATTRIBUTES.values()}


def depth(model: ModelName, level: Level) -> int:
    """0 for the model's top level, 1 below it ..."""
    return LEVELS[model].index(level)


__all__ = [
    "ANSWER_CHARACTER_SET", "ATTRIBUTES", "BY_KEYWORD", "FIND_SOP_CLASSES", "INSTANCE_AVAILABILITY", "LEVELS",
    "PATIENT_ROOT_FIND", "QUERY_RETRIEVE_LEVEL", "RETRIEVE_AE_TITLE", "SPECIFIC_CHARACTER_SET", "STUDY_ROOT_FIND",
    "UNIQUE_KEYS", "Attribute", "Level", "Match", "ModelName", "depth",
]
