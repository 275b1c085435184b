"""PostgreSQL store: versioned migrations and bulk idempotent batch upserts.

``PgStore`` is what the consumer pipeline writes through; ``dicomflow db
migrate`` / ``db status`` (in :mod:`dicomflow.cli.db`) manage the schema.
"""

from dicomflow.store.batch import series_lock_key
from dicomflow.store.deletes import DeletedInstance, DeleteResult, DeleteTarget
from dicomflow.store.exceptions import StoreDataError, StoreError
from dicomflow.store.migrate import AppliedMigration, Migration, available_migrations
from dicomflow.store.postgres import PgStore, StoreStatus
from dicomflow.store.sql import TABLES

__all__ = [
    "TABLES",
    "AppliedMigration",
    "DeleteResult",
    "DeleteTarget",
    "DeletedInstance",
    "Migration",
    "PgStore",
    "StoreDataError",
    "StoreError",
    "StoreStatus",
    "available_migrations",
    "series_lock_key",
]
