"""Errors of the query/retrieve layer: each carries the DIMSE status it is answered with."""

from __future__ import annotations

from dicomflow.errors import DicomflowError

#: PS3.4 C.4.1.1.4 (Table C.4-1) statuses of C-FIND.
SUCCESS = 0x0000
PENDING = 0xFF00
#: Pending, one or more optional keys were not supported for matching or existence.
PENDING_WARNING = 0xFF01
CANCEL = 0xFE00
#: Warning: matching reached the response limit (``[qr] max_results``).
RESPONSE_LIMIT = 0xB001
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
#: PS3.7 C.4: the SOP class is not supported (a context of another abstract syntax).
SOP_CLASS_NOT_SUPPORTED = 0x0122


class QrError(DicomflowError):
    """A query or retrieve that is answered with a failure status (``status``) and an Error Comment."""

    def __init__(self, status: int, comment: str) -> None:
        self.status = status
        self.comment = comment
        super().__init__(f"0x{status:04X}: {comment}")


class IdentifierError(QrError):
    """The identifier does not fit the model (missing level, relational, a key of the wrong level): 0xA900."""

    def __init__(self, comment: str) -> None:
        super().__init__(IDENTIFIER_DOES_NOT_MATCH, comment)


class MatchValueError(QrError):
    """A matching value that cannot be read (a date that is not one, a UID list with a wildcard): 0xC000."""

    def __init__(self, comment: str) -> None:
        super().__init__(UNABLE_TO_PROCESS, comment)


__all__ = [
    "CANCEL", "IDENTIFIER_DOES_NOT_MATCH", "OUT_OF_RESOURCES", "PENDING", "PENDING_WARNING", "RESPONSE_LIMIT",
    "SOP_CLASS_NOT_SUPPORTED", "SUCCESS", "UNABLE_TO_PROCESS", "IdentifierError", "MatchValueError", "QrError",
]
