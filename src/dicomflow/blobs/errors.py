"""Errors of the storage layer, classified by type: poison or transient.

- :class:`BlobNotFound`: the object is not there. Poison: a store event naming
  it can never be processed (dead letter, reason "blob-missing").
- :class:`BlobLocationError`: a location or key that does not name an object of
  this store (``..``, outside the storage root or the key prefix, another
  bucket). Poison too.
- :class:`BlobUnavailable`: the store cannot answer now (HTTP 5xx, a timeout,
  connection refused, a full disk). Transient: pause and retry, as for a
  database outage; :class:`BlobAccessDenied` (credentials refused) is one of
  them, since the instance is fine and the operator fixes the configuration.

:func:`dicomflow.errors.is_poison` decides by the ``poison`` attribute, so the
consumer loops need nothing blob-specific.
"""

from __future__ import annotations

from dicomflow.errors import DicomflowError


class BlobError(DicomflowError):
    """Root of the storage layer's errors; ``where`` is the location or key concerned."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class BlobNotFound(BlobError):
    """No object at this key (poison: replaying its store event cannot help)."""

    poison = True

    def __init__(self, where: str, problem: str = "no such object") -> None:
        super().__init__(where, problem)


class BlobLocationError(BlobError):
    """A location or key this store refuses (``..``, outside the root or prefix, another bucket)."""

    poison = True


class BlobUnavailable(BlobError):
    """The store did not serve the request now (5xx, timeout, refused connection, disk error): retry."""


class BlobAccessDenied(BlobUnavailable):
    """The store refused our credentials or permissions: transient for the data, a fix for the operator."""


__all__ = ["BlobAccessDenied", "BlobError", "BlobLocationError", "BlobNotFound", "BlobUnavailable"]
