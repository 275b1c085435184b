"""Extraction of one DICOM file's header into wire-format records.

The consumer calls :func:`extract_file` for each stored instance, in worker
processes of a pool: a module-level function taking and returning picklable
values (a path, strings, a datetime; two msgspec Structs).

Two readers find the bytes (:mod:`~dicomflow.extract.fast`, a specialised
Part 10 parser, and :mod:`~dicomflow.extract.general`, pydicom for everything
else); :mod:`~dicomflow.extract.records` decodes them into the records. The
tests prove both readers give identical records on every file both can read.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import struct
from os import PathLike
from typing import NamedTuple

from dicomflow.errors import ExtractError
from dicomflow.extract import fast, general, records
from dicomflow.extract.raw import RawHeader, TruncatedError
from dicomflow.models import DicomImageMeta, DicomStateMeta, now

_log = logging.getLogger(__name__)


class Extracted(NamedTuple):
    """The two records one instance file yields."""

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
    StudyDate fallback); defaults to now. Invalid optional values become null
    with a WARNING log naming the file and the tag.

    Raises:
        ExtractError: not DICOM, truncated, a required UID missing; carries path and reason.
            Also for a file that does not exist (poison: replaying cannot help).
        OSError: any other I/O failure (storage unreachable, permissions):
            transient, so the caller retries instead of dead-lettering.
    """
    name = os.fspath(path)
    header = read_header(name)
    state, image = records.build(header, name, tenant_id, received if received is not None else now())
    return Extracted(state, image)


def read_header(path: str) -> RawHeader:
    """The raw wanted attributes of ``path``: the fast reader, else the general one.

    Raises:
        ExtractError: the file is not DICOM, is truncated, does not exist, or
            pydicom cannot parse it.
        OSError: other I/O failures (transient).
    """
    try:
        try:
            return fast.read_header(path)
        except (fast.Unsupported, struct.error) as why:
            _log.debug("%s: general reader (%s)", path, why)
        return general.read_header(path)
    except TruncatedError as exc:
        raise ExtractError(path, f"truncated file: {exc}") from exc
    except general.NotDicomError as exc:
        raise ExtractError(path, f"not a DICOM file: {exc}") from exc
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise ExtractError(path, f"cannot read the file: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno is None:  # pydicom: "No tag to read at file position ..." is about the bytes
            raise ExtractError(path, f"not a readable DICOM file: {exc}") from exc
        raise
    except Exception as exc:  # pydicom's ways of saying "cannot parse this"
        raise ExtractError(path, f"not a readable DICOM file: {type(exc).__name__}: {exc}") from exc


__all__ = ["Extracted", "extract_file", "read_header"]
