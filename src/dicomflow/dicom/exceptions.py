"""What the DICOM layer can say about encoded bytes it cannot use.

These are the layer's own exceptions; each stage turns them into its error
type (extraction: :class:`~dicomflow.errors.ExtractError`; ingest: an
:class:`~dicomflow.ingest.exceptions.IngestError` with a C-STORE status).
"""

from __future__ import annotations


class TruncatedError(ValueError):
    """The data ends inside an element; the message names the element and the byte offsets.

    ``tag`` is that element's tag when the walker knows it (a prefix of a
    data set still arriving is complete once the element cut off lies past
    every wanted one).
    """

    def __init__(self, message: str, *, tag: int | None = None) -> None:
        super().__init__(message)
        self.tag = tag


class Unsupported(Exception):
    """The fast walker declines this encoding (the general reader, pydicom, takes over); the message says why."""


class NotDicomError(Exception):
    """The bytes are not DICOM at all (no DICM prefix, no data set at their start)."""


class UnreadableDicom(Exception):
    """The consumer could not index these bytes: the one validity verdict ingest applies too.

    ``reason`` is the sentence both the dead-letter header and a C-STORE
    Error Comment carry ("truncated file: Pixel Data needs ...").
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DerivedValueError(Exception):
    """A value both ingest and the consumer need cannot be derived (a required UID missing or invalid).

    ``missing`` tells an absent attribute (C-STORE 0xA900) from a malformed
    one (0xC000); ``attribute`` is the attribute's display name
    ("Study Instance UID"), ``value`` what was found.
    """

    def __init__(self, reason: str, *, attribute: str, missing: bool, value: str = "", problem: str = "") -> None:
        self.reason = reason
        self.attribute = attribute
        self.missing = missing
        self.value = value
        self.problem = problem
        super().__init__(reason)


__all__ = ["DerivedValueError", "NotDicomError", "TruncatedError", "UnreadableDicom", "Unsupported"]
