"""Errors of the lifecycle worker."""

from __future__ import annotations

from dicomflow.errors import DicomflowError


class LifecycleError(DicomflowError):
    """The lifecycle worker could not go on (transient unless it says otherwise): PostgreSQL, Kafka or storage away."""


__all__ = ["LifecycleError"]
