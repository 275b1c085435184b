"""Audit trail: DICOM PS3.15-style events for audit_queue."""

from dicomflow.audit import events

__all__ = ["events"]
