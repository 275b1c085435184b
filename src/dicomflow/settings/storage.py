"""Where instance bytes live: ``[storage]`` and ``[storage.s3]`` (the storage layer, :mod:`dicomflow.blobs`).

Part of the schema (:mod:`.schema` holds them in :class:`~dicomflow.settings.schema.Settings`);
in a module of their own to keep the schema's file short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class StorageS3Settings:
    """An S3-compatible object store (AWS S3, MinIO, Ceph RGW, the local stack's S3Proxy).

    Unset fields fall back to the standard ``AWS_*`` variables and the AWS
    credentials file (:mod:`.aws`); ``stack up --s3`` fills endpoint and
    credentials for the local stack's S3Proxy.
    """

    #: Service URL (``http://127.0.0.1:19070``); empty: AWS S3 in ``region``.
    endpoint: str = ""
    bucket: str = "dicomflow"
    region: str = "us-east-1"
    #: Every key starts with it (``"archive/"``); empty: keys from the bucket's root.
    prefix: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""
    #: ``https://endpoint/bucket/key`` rather than ``https://bucket.endpoint/key`` (MinIO, S3Proxy).
    path_style: bool = False
    #: Objects larger than this go up in parts of this size (S3's smallest part is 5 MiB).
    multipart_chunk_bytes: int = 8 * 1024 * 1024


@dataclass(frozen=True)
class StorageSettings:
    """Where instance files live; store events pointing elsewhere are rejected."""

    root: Path = Path(".dicomflow/storage")
    default_tenant: str = "default"
    #: Where instances are kept: "filesystem" (under ``root``) or "s3" (``[storage.s3]``).
    backend: Literal["filesystem", "s3"] = "filesystem"
    s3: StorageS3Settings = field(default_factory=StorageS3Settings)
    #: The local receive spool of the ``s3`` backend: a data set too large to hold in memory is
    #: received here, then uploaded; nothing stays for an acknowledged instance (docs/storage.md).
    spool: Path = Path(".dicomflow/spool")


__all__ = ["StorageS3Settings", "StorageSettings"]
