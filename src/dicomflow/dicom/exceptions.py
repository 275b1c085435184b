"""What the DICOM layer can say about encoded bytes it cannot use.

These are the layer's own exceptions; each stage turns them into its error
type (extraction: :class:`~dicomflow.errors.ExtractError`; ingest: an
:class:`~dicomflow.ingest.exceptions.IngestError` with a C-STORE status).
"""

from __future__ import annotations

from dicomflow.errors import DicomflowError


class DicomError(DicomflowError):
    """Root of what the DICOM layer says about encoded bytes it cannot use."""


class TruncatedError(DicomError, ValueError):
    """The data ends inside an element; the message names the element and the byte offsets.

    ``tag`` is that element's tag when the walker knows it (a prefix of a
    data set still arriving is complete once the element cut off lies past
    every wanted one).

    Also a ValueError on purpose: :func:`~dicomflow.dicom.part10.read_file_meta`
    raises ValueError for a malformed meta group and this for a cut-off one,
    and its callers (the walker, STOW-RS, the general reader) catch both as
    one ``except ValueError``.
    """

    def __init__(self, message: str, *, tag: int | None = None) -> None:
        super().__init__(message)
        self.tag = tag


class Unsupported(DicomError):
    """The fast walker declines this encoding (the general reader, pydicom, takes over); the message says why."""


class NotDicomError(DicomError):
    """The bytes are not DICOM at all (no DICM prefix, no data set at their start)."""

    poison = True


class UnreadableDicom(DicomError):
    """The consumer could not index these bytes: the one validity verdict ingest applies too.

    ``reason`` is the sentence both the dead-letter header and a C-STORE
    Error Comment carry ("truncated file: Pixel Data needs ...").
    """

    poison = True

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DerivedValueError(DicomError):
    """A value both ingest and the consumer need cannot be derived (a required UID missing or invalid).

    ``missing`` tells an absent attribute (C-STORE 0xA900) from a malformed
    one (0xC000); ``attribute`` is the attribute's display name
    ("Study Instance UID"), ``value`` what was found.
    """

    poison = True

    def __init__(self, reason: str, *, attribute: str, missing: bool, value: str = "", problem: str = "") -> None:
        self.reason = reason
        self.attribute = attribute
        self.missing = missing
        self.value = value
        self.problem = problem
        super().__init__(reason)


__all__ = ["DerivedValueError", "DicomError", "NotDicomError", "TruncatedError", "UnreadableDicom", "Unsupported"]
