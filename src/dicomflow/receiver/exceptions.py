"""Errors only the network receiver raises (the ingest errors are in :mod:`dicomflow.ingest.exceptions`)."""

from __future__ import annotations

from dicomflow.ingest.exceptions import OUT_OF_RESOURCES, IngestError


class PublishFailedError(IngestError):
    """Kafka did not acknowledge the store event in time; the sender should retry."""

    status = OUT_OF_RESOURCES
    poison = False


class InternalError(IngestError):
    """An unexpected failure inside the receiver; answered as out of resources so the sender retries."""

    status = OUT_OF_RESOURCES
    poison = False


__all__ = ["InternalError", "PublishFailedError"]
