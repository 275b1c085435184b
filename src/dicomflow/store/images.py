"""PostgreSQL reads and writes of the image workers (``dicomflow images``).

Reads: an instance's newest receipt (its file, transfer status and target
syntax, as WADO-RS serves it) and a series' instances in thumbnail order
(InstanceNumber, then SOP Instance UID: the order WADO-RS uses, so the
pre-built thumbnail is the one ``…/series/{series}/thumbnail`` would pick).

Writes, one transaction per batch, every value bound: the served copy's
location, the receipt's ``transfer_status`` (``Success`` / ``Failed`` with
``transfer_reason``), and the series thumbnail on exactly one instance row
(the others' ``thumbnail_location`` cleared). Each write sets the row to a
value, so replaying a batch leaves the same rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from dicomflow.models import DicomImageMeta

#: (tenant_id, study_uid, series_uid, sop_uid)
InstanceKey = tuple[str, str, str, str]
#: (tenant_id, study_uid, series_uid)
SeriesKey = tuple[str, str, str]


@dataclass(frozen=True)
class InstanceFiles:
    """What the workers need to know about one indexed instance."""

    trace_id: str
    file_path: str
    transfer_syntax_uid: str
    transfer_status: str
    target_ts: str
    pixel_data_location: str | None
    thumbnail_location: str | None


@dataclass(frozen=True)
class Transcoded:
    """A NeedTransfer instance's outcome: a served copy (Success) or why not (Failed)."""

    key: InstanceKey
    trace_id: str
    location: str | None
    reason: str | None = None


def instance_files(conn: psycopg.Connection[Any], key: InstanceKey) -> InstanceFiles | None:
    """The instance row with its newest receipt, or None when the consumer has not indexed it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT o.trace_id, o.file_path, o.transfer_syntax_uid, o.transfer_status, o.target_ts,"
            " i.pixel_data_location, i.thumbnail_location "
            "FROM dicom_image_meta i JOIN LATERAL (SELECT r.trace_id, r.file_path, r.transfer_syntax_uid,"
            " r.transfer_status, r.target_ts FROM dicom_object_meta r WHERE r.tenant_id = i.tenant_id"
            " AND r.study_uid = i.study_uid AND r.series_uid = i.series_uid AND r.sop_uid = i.sop_uid"
            " ORDER BY r.created_time DESC LIMIT 1) o ON true "
            "WHERE i.tenant_id = %s AND i.study_uid = %s AND i.series_uid = %s AND i.sop_uid = %s",
            key,
        )
        row = cur.fetchone()
    return InstanceFiles(**row) if row else None


def series_order(conn: psycopg.Connection[Any], series: SeriesKey) -> list[tuple[str, str | None]]:
    """The series' instances as (sop_uid, thumbnail_location), in thumbnail order."""
    rows = conn.execute(
        "SELECT sop_uid, thumbnail_location FROM dicom_image_meta WHERE tenant_id = %s AND study_uid = %s"
        " AND series_uid = %s ORDER BY instance_number NULLS LAST, sop_uid",
        series,
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def record_outputs(
    conn: psycopg.Connection[Any], transcoded: Sequence[Transcoded],
    thumbnails: Sequence[tuple[InstanceKey, str]], when: dt.datetime,
) -> list[DicomImageMeta]:
    """Write the batch's outputs in one transaction; return the instance rows that changed, as events.

    A thumbnail clears ``thumbnail_location`` on the other instances of its
    series (they are returned too: their published version must lose it).
    """
    changed: set[InstanceKey] = set()
    with conn.transaction(), conn.cursor() as cur:
        for t in transcoded:
            cur.execute(
                "UPDATE dicom_object_meta SET transfer_status = %s, transfer_reason = %s WHERE trace_id = %s",
                ("Success" if t.location else "Failed", t.reason[:1024] if t.reason else None, t.trace_id),
            )
            if t.location:
                cur.execute(
                    "UPDATE dicom_image_meta SET pixel_data_location = %s, updated_time = %s WHERE tenant_id = %s"
                    " AND study_uid = %s AND series_uid = %s AND sop_uid = %s"
                    " AND pixel_data_location IS DISTINCT FROM %s",
                    (t.location, when, *t.key, t.location),
                )
                if cur.rowcount:
                    changed.add(t.key)
        for key, location in thumbnails:
            cur.execute(
                "UPDATE dicom_image_meta SET thumbnail_location = CASE WHEN sop_uid = %s THEN %s END,"
                " updated_time = %s WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s"
                " AND thumbnail_location IS DISTINCT FROM (CASE WHEN sop_uid = %s THEN %s END)"
                " RETURNING sop_uid",
                (key[3], location, when, *key[:3], key[3], location),
            )
            changed.update((*key[:3], r[0]) for r in cur.fetchall())
        return _rows(cur.connection, sorted(changed))


def _rows(conn: psycopg.Connection[Any], keys: Sequence[InstanceKey]) -> list[DicomImageMeta]:
    if not keys:
        return []
    fields = DicomImageMeta.__struct_fields__
    out: list[DicomImageMeta] = []
    with conn.cursor(row_factory=dict_row) as cur:
        for key in keys:
            cur.execute(
                "SELECT * FROM dicom_image_meta WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s"
                " AND sop_uid = %s", key,
            )
            row = cur.fetchone()
            if row is not None:
                out.append(DicomImageMeta(**{f: row[f] for f in fields}))
    return out


__all__ = ["InstanceFiles", "InstanceKey", "SeriesKey", "Transcoded", "instance_files", "record_outputs",
           "series_order"]
