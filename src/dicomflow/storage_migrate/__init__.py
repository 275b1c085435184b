"""``dicomflow storage migrate``: instances and the image workers' outputs onto the other backend.

- :mod:`.run`: :class:`Migration`, the batches over the index and the :class:`Summary`;
- :mod:`.copy`: :class:`Copier`, one object copied and verified, never overwriting;
- :mod:`.digest`: the checksums (S3's ETag, SHA-256) and why they are the check.

An operator's tool like ``dlq``: it uses the storage layer (:mod:`dicomflow.blobs`)
and the index's location columns (:mod:`dicomflow.store.locations`); docs/storage.md
("Migrating between backends") says how to run it.
"""

from __future__ import annotations

from dicomflow.storage_migrate.copy import Copier, CopyResult
from dicomflow.storage_migrate.digest import Digest, digest_of
from dicomflow.storage_migrate.run import Backend, MigrateOptions, Migration, Summary, stores_for

__all__ = ["Backend", "Copier", "CopyResult", "Digest", "MigrateOptions", "Migration", "Summary", "digest_of",
           "stores_for"]
