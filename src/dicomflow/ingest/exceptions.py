"""Errors of ingest (every way in: C-STORE, STOW-RS, folder publishing), each carrying a DICOM status.

A C-STORE handler never raises: it catches these and turns them into a
failure status with an Error Comment, so the sending modality knows to retry
(out of resources) or to give up (cannot understand). The folder publisher
turns the same errors into "skipped" or "failed" lines of its summary.
Publishing errors (:class:`PublishFailedError`) and unexpected failures
(:class:`InternalError`) are here too: the store decision that raises them
is shared by the receiver and STOW-RS.

Status codes (PS3.4 Annex B.2.3):

- ``0xA700`` Refused: Out of Resources. Transient: our disk or Kafka failed;
  the sender should retry later.
- ``0xA900`` Error: Data Set Does Not Match SOP Class (a required attribute
  is missing).
- ``0xC000`` Error: Cannot Understand (a UID or tenant is malformed).
"""

from __future__ import annotations

from dicomflow.errors import DicomflowError

OUT_OF_RESOURCES = 0xA700
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000


class IngestError(DicomflowError):
    """An instance was not accepted; ``status`` is the C-STORE status to answer.

    The ingest stage's own error (not the receiver's): STOW-RS and the folder
    publisher raise and catch it as the receiver does.
    """

    #: C-STORE failure status to answer with.
    status: int = CANNOT_UNDERSTAND
    #: True when the instance itself is bad (retrying the same bytes cannot help).
    poison = True

    def __init__(self, reason: str, *, sop_uid: str | None = None) -> None:
        self.reason = reason
        self.sop_uid = sop_uid
        where = f" (SOP Instance UID {sop_uid!r})" if sop_uid else ""
        super().__init__(f"{reason}{where}")


class InvalidUIDError(IngestError):
    """A UID does not follow the DICOM UID grammar; it would not be a safe file name."""

    status = CANNOT_UNDERSTAND

    def __init__(self, name: str, value: str, problem: str) -> None:
        self.name = name
        self.value = value
        self.problem = problem
        super().__init__(f"invalid {name} {value[:80]!r}: {problem}")


class InvalidTenantError(IngestError):
    """The tenant id taken from the data set or the AE map is not a safe folder name."""

    status = CANNOT_UNDERSTAND


class MissingAttributeError(IngestError):
    """A required attribute (Study / Series / SOP Instance UID) is missing or empty."""

    status = DATASET_MISMATCH


class MalformedDatasetError(IngestError):
    """The encoded data set cannot be read (truncated, corrupt deflate stream)."""

    status = CANNOT_UNDERSTAND


class StorageWriteError(IngestError):
    """The file could not be written durably (disk full, permission, I/O error).

    Transient: the sender may retry when the disk is back.
    """

    status = OUT_OF_RESOURCES
    poison = False


class JournalWriteError(StorageWriteError):
    """The receiver journal's record or the file's folder could not be made durable (out of resources: retry)."""


class JournalFullError(StorageWriteError):
    """Too many store events wait for Kafka in the receiver journal (it is down or slow); retry later."""


class PublishFailedError(IngestError):
    """Kafka did not acknowledge the store event in time; the sender should retry."""

    status = OUT_OF_RESOURCES
    poison = False


class InternalError(IngestError):
    """An unexpected failure while storing; answered as out of resources so the sender retries."""

    status = OUT_OF_RESOURCES
    poison = False


__all__ = [
    "CANNOT_UNDERSTAND",
    "DATASET_MISMATCH",
    "OUT_OF_RESOURCES",
    "IngestError",
    "InternalError",
    "InvalidTenantError",
    "InvalidUIDError",
    "JournalFullError",
    "JournalWriteError",
    "MalformedDatasetError",
    "MissingAttributeError",
    "PublishFailedError",
    "StorageWriteError",
]
