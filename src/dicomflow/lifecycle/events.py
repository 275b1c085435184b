"""The change event on ``dicom_change_queue``: one change-log row, dicomflow's own format (issue 20).

Not one of the reference's messages (those stay in :mod:`dicomflow.models`,
unchanged); JSON like them, decoded with :func:`dicomflow.models.decode`.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

import msgspec


class ChangeEvent(msgspec.Struct, kw_only=True):
    """One change-log row on dicom_change_queue (key: study UID), dicomflow's own format (issue 20).

    ``state`` is the row's state when it was published: a create already
    replaced or deleted by then says so.
    """

    sequence: int
    tenant_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    action: Literal["create", "update", "delete"]
    state: Literal["current", "replaced", "deleted"]
    #: When the change was recorded, UTC, ISO 8601 with its offset.
    timestamp: dt.datetime

    def key(self) -> str:
        """dicom_change_queue key: the study, so one study's changes stay in sequence order."""
        return self.study_uid


__all__ = ["ChangeEvent"]
