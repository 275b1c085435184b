"""What every way in shares: the C-STORE receiver, the folder publisher (and, later, STOW).

Modules, in the order an instance meets them:

- :mod:`~dicomflow.ingest.ingestor`: the steps every entry point runs the same way:
  read the header, validate the UIDs, resolve the tenant, place, write, describe
  (the store event);
- :mod:`~dicomflow.ingest.uids`: UID / tenant validation and the storage layout
  ``{root}/{tenant}/{YYYYMMDD}/{study}/{series}/{sop}.dcm``;
- :mod:`~dicomflow.ingest.tenant`: which tenant an instance belongs to;
- :mod:`~dicomflow.ingest.storage`: atomic, durable writes;
- :mod:`~dicomflow.ingest.transfer_log`: per-association (per-run) audit tallies;
- :mod:`~dicomflow.ingest.exceptions`: why an instance is refused, with the C-STORE
  status to answer.

It imports no stage above it (receiver, scanner, CLI).
"""

from dicomflow.ingest.exceptions import (
    IngestError,
    InvalidTenantError,
    InvalidUIDError,
    MalformedDatasetError,
    MissingAttributeError,
    StorageWriteError,
)
from dicomflow.ingest.uids import instance_path, is_valid_uid, require_tenant, require_uid

__all__ = [
    "IngestError",
    "InvalidTenantError",
    "InvalidUIDError",
    "MalformedDatasetError",
    "MissingAttributeError",
    "StorageWriteError",
    "instance_path",
    "is_valid_uid",
    "require_tenant",
    "require_uid",
]
