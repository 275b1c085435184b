"""Where the index says instance bytes are: every column holding a location, read and repointed in batches.

Three columns name an object of the storage layer (a path on ``filesystem``,
``s3://bucket/<prefix><key>`` on ``s3``):

- ``dicom_object_meta.file_path``: every receipt of an instance (a stored-again
  instance has several, all naming the same key);
- ``dicom_image_meta.pixel_data_location``: the original (the consumer's
  value) or the image workers' served copy (``…/.served/<sop>.<ts>.dcm``);
- ``dicom_image_meta.thumbnail_location``: the series thumbnail
  (``…/.served/thumbnail.jpg``), on exactly one instance row of its series.

So every reference to an object lies in the rows of one instance: the
migration (:mod:`dicomflow.storage_migrate`) walks instances in primary-key
order, a batch at a time (:func:`next_instances`), reads every reference of a
contiguous range of them (:func:`references`) and repoints those it copied in
one transaction (:func:`repoint`). Every value is a bound parameter; the column
names come from :data:`LOCATION_COLUMNS` only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

#: (tenant_id, study_uid, series_uid, sop_uid)
InstanceKey = tuple[str, str, str, str]

#: Every (table, column) naming an object of the storage layer.
LOCATION_COLUMNS = (
    ("dicom_object_meta", "file_path"),
    ("dicom_image_meta", "pixel_data_location"),
    ("dicom_image_meta", "thumbnail_location"),
)

#: Before every instance key (tenant ids are never empty).
START: InstanceKey = ("", "", "", "")

_INSTANCE = "(tenant_id, study_uid, series_uid, sop_uid)"


@dataclass(frozen=True)
class LocationRef:
    """One column of one row that names an object: ``row`` is the primary key (a trace id, or the instance key)."""

    table: str
    column: str
    row: tuple[str, ...]
    location: str


def count_instances(conn: psycopg.Connection[Any]) -> int:
    """Instances with an instance row or a receipt (the migration's unit of progress)."""
    row = conn.execute(
        f"SELECT count(*) FROM (SELECT {_INSTANCE[1:-1]} FROM dicom_image_meta"
        f" UNION SELECT {_INSTANCE[1:-1]} FROM dicom_object_meta) u"
    ).fetchone()
    return int(row[0]) if row else 0


def next_instances(conn: psycopg.Connection[Any], after: InstanceKey, limit: int) -> list[InstanceKey]:
    """Up to ``limit`` instance keys after ``after``, in key order, from both tables (both by their indexes)."""
    rows = conn.execute(
        f"SELECT * FROM ((SELECT {_INSTANCE[1:-1]} FROM dicom_image_meta WHERE {_INSTANCE} > (%s, %s, %s, %s)"
        f" ORDER BY 1, 2, 3, 4 LIMIT %s) UNION (SELECT DISTINCT {_INSTANCE[1:-1]} FROM dicom_object_meta"
        f" WHERE {_INSTANCE} > (%s, %s, %s, %s) ORDER BY 1, 2, 3, 4 LIMIT %s)) u ORDER BY 1, 2, 3, 4 LIMIT %s",
        (*after, limit, *after, limit, limit),
    ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


def references(conn: psycopg.Connection[Any], first: InstanceKey, last: InstanceKey) -> list[LocationRef]:
    """Every non-empty location of the instances from ``first`` to ``last`` (inclusive), receipts first."""
    where = f"{_INSTANCE} >= (%s, %s, %s, %s) AND {_INSTANCE} <= (%s, %s, %s, %s)"
    refs = [
        LocationRef("dicom_object_meta", "file_path", (r[0],), r[1])
        for r in conn.execute(
            f"SELECT trace_id, file_path FROM dicom_object_meta WHERE {where} ORDER BY trace_id", (*first, *last),
        ).fetchall()
        if r[1]
    ]
    for r in conn.execute(
        f"SELECT {_INSTANCE[1:-1]}, pixel_data_location, thumbnail_location FROM dicom_image_meta WHERE {where}"
        " ORDER BY 1, 2, 3, 4", (*first, *last),
    ).fetchall():
        key = (r[0], r[1], r[2], r[3])
        refs.extend(LocationRef("dicom_image_meta", column, key, value)
                    for column, value in (("pixel_data_location", r[4]), ("thumbnail_location", r[5])) if value)
    return refs


def repoint(conn: psycopg.Connection[Any], moves: Sequence[tuple[LocationRef, str]]) -> int:
    """Set each reference to its new location, in one transaction; return the rows changed.

    A row is changed only while it still holds the location read
    (``ref.location``): a row rewritten meanwhile (an instance stored again)
    keeps its new value, and the count is lower than ``len(moves)``.
    """
    groups: dict[tuple[str, str], list[tuple[LocationRef, str]]] = defaultdict(list)
    for ref, new in moves:
        if (ref.table, ref.column) not in LOCATION_COLUMNS:
            raise ValueError(f"{ref.table}.{ref.column} holds no location")
        groups[(ref.table, ref.column)].append((ref, new))
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for (table, column), group in groups.items():
            col = sql.Identifier(column)
            olds = [ref.location for ref, _ in group]
            news = [new for _, new in group]
            if table == "dicom_object_meta":
                cur.execute(sql.SQL(
                    "UPDATE dicom_object_meta AS t SET {col} = m.new FROM unnest(%s::text[], %s::text[], %s::text[])"
                    " AS m(trace_id, old, new) WHERE t.trace_id = m.trace_id AND t.{col} = m.old").format(col=col),
                    ([ref.row[0] for ref, _ in group], olds, news))
            else:
                keys = [[ref.row[i] for ref, _ in group] for i in range(4)]
                cur.execute(sql.SQL(
                    "UPDATE dicom_image_meta AS t SET {col} = m.new FROM unnest(%s::text[], %s::text[], %s::text[],"
                    " %s::text[], %s::text[], %s::text[]) AS m(tenant_id, study_uid, series_uid, sop_uid, old, new)"
                    " WHERE t.tenant_id = m.tenant_id AND t.study_uid = m.study_uid AND t.series_uid = m.series_uid"
                    " AND t.sop_uid = m.sop_uid AND t.{col} = m.old").format(col=col),
                    (*keys, olds, news))
            changed += cur.rowcount
    return changed


__all__ = ["LOCATION_COLUMNS", "START", "InstanceKey", "LocationRef", "count_instances", "next_instances",
           "references", "repoint"]
