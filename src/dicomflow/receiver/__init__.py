"""Ingest over the DICOM network: the C-STORE SCP and what it shares with ``publish``.

Modules, in the order an instance meets them:

- :mod:`~dicomflow.receiver.scp`: one receiver process (engine, store service, audit);
- :mod:`~dicomflow.receiver.acceptor`: the native network engine (default), over
  :mod:`~dicomflow.receiver.upperlayer` (PDUs) and :mod:`~dicomflow.receiver.dimse`
  (command sets);
- :mod:`~dicomflow.receiver.pynetdicom_server`: the pynetdicom network engine;
- :mod:`~dicomflow.receiver.service`: the C-STORE decision: validate, write, publish, answer;
- :mod:`~dicomflow.receiver.header`: the few header attributes, read from raw bytes;
- :mod:`~dicomflow.receiver.uids`: UID / tenant validation and the storage layout;
- :mod:`~dicomflow.receiver.tenant`: which tenant an instance belongs to;
- :mod:`~dicomflow.receiver.part10`: preamble and File Meta Information;
- :mod:`~dicomflow.receiver.storage`: atomic, durable writes;
- :mod:`~dicomflow.receiver.ingest`: the steps above, shared with the folder publisher;
- :mod:`~dicomflow.receiver.audit`: per-association audit tallies;
- :mod:`~dicomflow.receiver.workers`: several receiver processes behind one port.

This package imports nothing heavy on purpose (the CLI imports it for
``--help``); import :mod:`dicomflow.receiver.scp` for the server.
"""

from dicomflow.receiver.exceptions import (
    IngestError,
    InvalidTenantError,
    InvalidUIDError,
    MissingAttributeError,
    PublishFailedError,
    StorageWriteError,
)
from dicomflow.receiver.uids import instance_path, is_valid_uid, require_tenant, require_uid

__all__ = [
    "IngestError",
    "InvalidTenantError",
    "InvalidUIDError",
    "MissingAttributeError",
    "PublishFailedError",
    "StorageWriteError",
    "instance_path",
    "is_valid_uid",
    "require_tenant",
    "require_uid",
]
