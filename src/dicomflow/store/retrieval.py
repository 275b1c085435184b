"""The index lookup of a DIMSE retrieve (C-MOVE, C-GET): unique keys → the instances to send.

A retrieve identifier names instances by hierarchical unique keys (PS3.4
C.4.2.2.1): a Patient ID, lists of Study / Series / SOP Instance UIDs. The
query is bounded by the caller's tenant first, so another tenant's rows are
never matched. Only instances the consumer indexed (a ``dicom_image_meta``
row) are sent; their object is the newest receipt's ``file_path``, as for
WADO-RS (:func:`dicomflow.store.queries.instances`). The rows are small (a
location and a few UIDs); the objects are read one at a time by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row


@dataclass(frozen=True)
class RetrieveKeys:
    """The unique keys of one retrieve identifier (empty: not given at that level)."""

    patient_id: str | None = None
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    sop_uids: tuple[str, ...] = ()

    def empty(self) -> bool:
        return self.patient_id is None and not (self.study_uids or self.series_uids or self.sop_uids)


@dataclass(frozen=True)
class RetrieveItem:
    """One instance to send: its UIDs, its stored transfer syntax and its object's location."""

    patient_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    file_path: str


def _retrieve_query(keys: RetrieveKeys, params: list[Any]) -> sql.Composed:
    """The query's text; its values appended to ``params`` (which holds the tenant)."""
    conditions: list[sql.Composable] = [sql.SQL("i.tenant_id = %s")]
    if keys.patient_id is not None:
        # through the series states' patient index (dicom_image_meta has none on patient_id)
        params.extend([params[0], keys.patient_id, keys.patient_id])
        conditions.append(sql.SQL("i.study_uid IN (SELECT s.study_uid FROM dicom_state_meta s"
                                  " WHERE s.tenant_id = %s AND s.patient_id = %s) AND i.patient_id = %s"))
    for column, values in (("study_uid", keys.study_uids), ("series_uid", keys.series_uids),
                           ("sop_uid", keys.sop_uids)):
        if values:
            params.append(list(values))
            conditions.append(sql.SQL("{} = ANY(%s)").format(sql.Identifier("i", column)))
    return sql.SQL(
        "SELECT i.patient_id, i.study_uid, i.series_uid, i.sop_uid, i.sop_class_uid, i.transfer_syntax_uid,"
        " o.file_path "
        "FROM dicom_image_meta i "
        "JOIN LATERAL (SELECT r.file_path FROM dicom_object_meta r WHERE r.tenant_id = i.tenant_id"
        " AND r.study_uid = i.study_uid AND r.series_uid = i.series_uid AND r.sop_uid = i.sop_uid"
        " ORDER BY r.created_time DESC LIMIT 1) o ON true "
        "WHERE {} ORDER BY i.study_uid, i.series_uid, i.instance_number NULLS LAST, i.sop_uid"
    ).format(sql.SQL(" AND ").join(conditions))


def retrieve_instances(conn: psycopg.Connection[Any], tenant: str, keys: RetrieveKeys) -> list[RetrieveItem]:
    """The indexed instances of ``tenant`` that ``keys`` name, in study / series / instance-number order.

    Keys with nothing in them match nothing (a retrieve must name what it wants).

    Raises:
        psycopg.Error: the query failed (the caller classifies it).
    """
    if keys.empty():
        return []
    params: list[Any] = [tenant]
    query = _retrieve_query(keys, params)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [RetrieveItem(**row) for row in cur.fetchall()]


__all__ = ["RetrieveItem", "RetrieveKeys", "retrieve_instances"]
