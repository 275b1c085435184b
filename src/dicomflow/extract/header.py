"""Extraction of one DICOM file's header into wire-format records.

The consumer calls :func:`extract_file` for each stored instance, in worker
processes of a pool: a module-level function taking and returning picklable
values (a path, strings, a datetime; two msgspec Structs).

The DICOM layer finds the bytes (:func:`dicomflow.dicom.reader.read_file`:
the element walker, else pydicom) and decides whether the file can be read
at all, the same verdict ingest applies before accepting a file;
:mod:`~dicomflow.extract.records` builds the records.
"""

from __future__ import annotations

import datetime as dt
import os
from os import PathLike
from typing import NamedTuple

from dicomflow.dicom import reader
from dicomflow.dicom.exceptions import UnreadableDicom
from dicomflow.dicom.walker import RawHeader
from dicomflow.errors import ExtractError
from dicomflow.extract import records
from dicomflow.models import DicomImageMeta, DicomStateMeta, now


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


def extract_blob(store: reader.RangedSource, key: str, tenant_id: str, *, received: dt.datetime | None = None,
                 fetched: list[int] | None = None, head: tuple[bytes, int] | None = None) -> Extracted:
    """:func:`extract_file` for an object of the storage layer, its header read by ranged reads.

    Raises:
        ExtractError: the object's bytes are not readable DICOM (poison).
        BlobNotFound, BlobLocationError: poison; BlobUnavailable: transient.
    """
    name = store.location(key)
    try:
        header = reader.read_blob(store, key, fetched=fetched, head=head)
    except UnreadableDicom as exc:
        raise ExtractError(name, exc.reason) from exc
    state, image = records.build(header, name, tenant_id, received if received is not None else now())
    return Extracted(state, image)


def fetch_head(store: reader.RangedSource, key: str) -> tuple[bytes, int]:
    """The first ranged read :func:`extract_blob` makes (its ``head``), for fetching ahead of parsing."""
    return store.read_head(key, reader.HEAD_BYTES)


def read_header(path: str) -> RawHeader:
    """The raw wanted attributes of ``path`` (the walker, else pydicom).

    Raises:
        ExtractError: the file is not DICOM, is truncated, does not exist, or
            pydicom cannot parse it.
        OSError: other I/O failures (transient).
    """
    try:
        return reader.read_file(path)
    except UnreadableDicom as exc:
        raise ExtractError(path, exc.reason) from exc


__all__ = ["Extracted", "extract_blob", "extract_file", "fetch_head", "read_header"]
