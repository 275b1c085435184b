"""What every way in shares: the C-STORE receiver, STOW-RS and the folder publisher.

Modules, in the order an instance meets them:

- :mod:`~dicomflow.ingest.ingestor`: the steps every entry point runs the same way:
  read the header, validate the UIDs, resolve the tenant, place, write, describe
  (the store event);
- :mod:`~dicomflow.ingest.service`: the store decision for one instance (validate, write,
  publish and wait for Kafka, answer a status), called per C-STORE and per STOW-RS part;
- :mod:`~dicomflow.ingest.uids`: UID / tenant validation and the storage layout
  ``{root}/{tenant}/{YYYYMMDD}/{study}/{series}/{sop}.dcm``;
- :mod:`~dicomflow.ingest.tenant`: which tenant an instance belongs to;
- :mod:`~dicomflow.ingest.storage`: atomic, durable writes (whole, or streamed as bytes arrive);
- :mod:`~dicomflow.ingest.duplicates`: the same SOP Instance UID again (``ingest.duplicates``);
- :mod:`~dicomflow.ingest.transfer_log`: audit tallies per session (:class:`~dicomflow.ingest.transfer_log.SessionKey`:
  an association, a STOW-RS request, a publish run);
- :mod:`~dicomflow.ingest.exceptions`: why an instance is refused, with the C-STORE
  status to answer.

It imports no stage above it (receiver, scanner, web, CLI); below it, the DICOM layer
and the Kafka producer.
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
