"""A retrieve identifier's unique keys (PS3.4 C.4.2.2.1, C.4.3.2.1): pure, no I/O.

A C-MOVE or C-GET names what to send by the Query/Retrieve Level and the
unique keys at that level and above: Patient ID (Patient Root), Study
Instance UIDs, Series Instance UIDs, SOP Instance UIDs (a list at the
retrieve level, one value above it). Every UID is checked by the one UID
rule before it reaches SQL. A key above the level may be left out (many
SCUs omit the Patient ID below the patient level); a key below the level is
refused, as is a level the information model lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydicom.dataset import Dataset

from dicomflow.dicom.derived import uid_problem
from dicomflow.errors import DicomflowError
from dicomflow.store.retrieval import RetrieveKeys

Model = Literal["patient", "study"]

#: PS3.4 C.4.2.1.4 / C.4.3.1.4: Identifier does not match SOP Class.
IDENTIFIER_MISMATCH = 0xA900
#: Unable to process (an identifier we cannot read).
UNABLE_TO_PROCESS = 0xC000

#: Patient Root and Study Root Query/Retrieve Information Model - MOVE / GET (PS3.4 C.6).
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
MODEL_OF: dict[str, Model] = {PATIENT_ROOT_MOVE: "patient", PATIENT_ROOT_GET: "patient",
                              STUDY_ROOT_MOVE: "study", STUDY_ROOT_GET: "study"}

_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_UID_KEYS = (("STUDY", "StudyInstanceUID"), ("SERIES", "SeriesInstanceUID"), ("IMAGE", "SOPInstanceUID"))


class RetrieveRefused(DicomflowError):
    """The identifier cannot be answered: the DIMSE status to send and why (the Error Comment)."""

    poison = True

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Retrieve:
    """What one identifier asks for."""

    level: str
    keys: RetrieveKeys


def _values(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds:
        return []
    value = ds[keyword].value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip().rstrip("\0") for v in items if str(v).strip()]


def _uids(ds: Dataset, keyword: str, *, many: bool) -> tuple[str, ...]:
    values = _values(ds, keyword)
    if len(values) > 1 and not many:
        raise RetrieveRefused(IDENTIFIER_MISMATCH, f"{keyword} above the retrieve level must be one value")
    for value in values:
        problem = uid_problem(value)
        if problem is not None:
            raise RetrieveRefused(IDENTIFIER_MISMATCH, f"{keyword} {value[:64]!r} is not a UID: {problem}")
    return tuple(dict.fromkeys(values))


def retrieve_of(identifier: Dataset, model: Model) -> Retrieve:
    """The level and unique keys of ``identifier`` under ``model``.

    Raises:
        RetrieveRefused: 0xA900 for a level the model lacks, a missing key at
            the level, a key below it, a list above it or a malformed UID.
    """
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in _LEVELS or (model == "study" and level == "PATIENT"):
        raise RetrieveRefused(IDENTIFIER_MISMATCH, f"QueryRetrieveLevel {level!r} is not one of the {model} root's")
    depth = _LEVELS.index(level)
    patient = _values(identifier, "PatientID")
    if len(patient) > 1:
        raise RetrieveRefused(IDENTIFIER_MISMATCH, "PatientID must be one value")
    if level == "PATIENT" and not patient:
        raise RetrieveRefused(IDENTIFIER_MISMATCH, "a PATIENT level retrieve needs a PatientID")
    found: dict[str, tuple[str, ...]] = {}
    for key_level, keyword in _UID_KEYS:
        key_depth = _LEVELS.index(key_level)
        uids = _uids(identifier, keyword, many=key_depth == depth)
        if key_depth > depth and uids:
            raise RetrieveRefused(IDENTIFIER_MISMATCH, f"{keyword} is below the {level} retrieve level")
        if key_depth == depth and not uids:
            raise RetrieveRefused(IDENTIFIER_MISMATCH, f"a {level} level retrieve needs {keyword}")
        found[keyword] = uids
    keys = RetrieveKeys(patient_id=patient[0] if patient else None, study_uids=found["StudyInstanceUID"],
                        series_uids=found["SeriesInstanceUID"], sop_uids=found["SOPInstanceUID"])
    return Retrieve(level, keys)


__all__ = ["IDENTIFIER_MISMATCH", "MODEL_OF", "PATIENT_ROOT_GET", "PATIENT_ROOT_MOVE", "STUDY_ROOT_GET",
           "STUDY_ROOT_MOVE", "UNABLE_TO_PROCESS", "Model", "Retrieve", "RetrieveRefused", "retrieve_of"]
