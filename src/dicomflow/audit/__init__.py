"""Audit trail: DICOM PS3.15-style events for audit_queue (:mod:`.events`; the DICOMweb server's in :mod:`.dicomweb`)."""

from dicomflow.audit import dicomweb, events

__all__ = ["dicomweb", "events"]
