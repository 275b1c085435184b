"""Errors of the dead-letter tools."""

from __future__ import annotations

from dicomflow.errors import DicomflowError


class DlqError(DicomflowError):
    """A dead-letter operation cannot be done (topic missing, bad ID or time, broker unreachable)."""


class LetterNotFoundError(DlqError):
    """No dead letter at the given ``<dlq-topic>:<partition>:<offset>``."""


__all__ = ["DlqError", "LetterNotFoundError"]
