"""Extraction of one DICOM file's header into wire-format records.

INTERFACE STUB — to be implemented (issue: DICOM header extraction).
"""

from __future__ import annotations

import datetime as dt
from os import PathLike
from typing import NamedTuple

from dicomflow.models import DicomImageMeta, DicomStateMeta


class Extracted(NamedTuple):
    state: DicomStateMeta
    image: DicomImageMeta


def extract_file(
    path: str | PathLike[str],
    tenant_id: str,
    *,
    received: dt.datetime | None = None,
) -> Extracted:
    """Read the header of ``path`` (never the pixel data) and build both records.

    ``received`` is the receipt time (created_time/updated_time, and the last
    StudyDate fallback); defaults to now.

    Raises:
        ExtractError: not DICOM, truncated, a required UID missing; carries path and reason.
    """
    raise NotImplementedError
