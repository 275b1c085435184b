"""The object an index row names, for DICOMweb: its key, and its checked real path on the filesystem backend.

The fast local reads of :mod:`dicomflow.web.wado` (page cache on the event
loop, one read per instance) use :attr:`Blob.path`, the FilesystemStore's
location of the key after :meth:`~dicomflow.web.context.WebContext.locate`
checked it; on ``s3`` it is None and every read goes through the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from dicomflow.blobs import BlobNotFound, BlobStore
from dicomflow.blobs.ranged import open_object


@dataclass(frozen=True, slots=True)
class Blob:
    """The object of an index row: its key in the store, and its real local path on the filesystem backend."""

    key: str
    path: Path | None


def open_source(store: BlobStore, blob: Blob) -> BinaryIO:
    """A seekable binary file of the object, positioned at 0 (the caller closes it).

    Raises:
        BlobNotFound, BlobUnavailable: from the store (an ``s3`` object's absence shows at the first read).
    """
    if blob.path is not None:
        try:
            return open(blob.path, "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(str(blob.path)) from exc
    return open_object(store, blob.key)


__all__ = ["Blob", "open_source"]
