"""The one layer over instance bytes: write durably, read whole or a range, stream, exists, delete, list.

- :mod:`.base`: the :class:`BlobStore` protocol and :class:`BlobInfo`;
- :mod:`.filesystem`: :class:`FilesystemStore`, files under the storage root;
- :mod:`.s3`: :class:`S3Store`, any S3-compatible service (through obstore);
- :mod:`.location`: keys, the locations store events carry, and their checks;
- :mod:`.errors`: :class:`BlobError` and its poison / transient subclasses.

:func:`open_store` builds the backend ``[storage] backend`` names. No stage
uses the layer yet (issue 18's next steps); docs/storage.md says how to run it.
"""

from __future__ import annotations

from dicomflow.blobs.base import DEFAULT_CHUNK, BlobInfo, BlobStore
from dicomflow.blobs.errors import BlobAccessDenied, BlobError, BlobLocationError, BlobNotFound, BlobUnavailable
from dicomflow.blobs.filesystem import FilesystemStore
from dicomflow.blobs.location import check_key, key_of_path, key_of_s3
from dicomflow.settings import StorageSettings


def open_store(settings: StorageSettings, *, fsync: bool = True) -> BlobStore:
    """The store ``settings.backend`` names (S3's client is created here, once per store).

    ``fsync`` applies to the filesystem backend (``receiver.fsync``).
    """
    if settings.backend == "s3":
        from dicomflow.blobs.s3 import S3Store  # obstore loads only where S3 is used

        return S3Store(settings.s3)
    return FilesystemStore(settings.root, fsync=fsync)


__all__ = [
    "DEFAULT_CHUNK",
    "BlobAccessDenied",
    "BlobError",
    "BlobInfo",
    "BlobLocationError",
    "BlobNotFound",
    "BlobStore",
    "BlobUnavailable",
    "FilesystemStore",
    "check_key",
    "key_of_path",
    "key_of_s3",
    "open_store",
]
