"""Errors of the PostgreSQL store, beyond the transient :class:`~dicomflow.errors.StoreError`."""

from __future__ import annotations

from typing import Any

from dicomflow.errors import StoreError


class StoreDataError(StoreError):
    """PostgreSQL refused a value of the batch (out of range, invalid text ...).

    Poison: writing the same batch again fails the same way. Unlike a lost
    connection, retrying does not help; the caller splits the batch or
    dead-letters the culprit.

    Attributes:
        table: the table whose rows were refused, when known.
        record: the refused record (a ``DicomStoreMeta``, ``DicomStateMeta``
            or ``DicomImageMeta`` of the batch) when PostgreSQL or the encoder
            named its row, else None.
        sqlstate: the PostgreSQL error code (``22003`` numeric value out of
            range ...), None for a client-side encoding error.
    """

    poison = True

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        record: Any = None,
        sqlstate: str | None = None,
    ) -> None:
        self.table = table
        self.record = record
        self.sqlstate = sqlstate
        super().__init__(message)


__all__ = ["StoreDataError", "StoreError"]
