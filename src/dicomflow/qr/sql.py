"""A :class:`~dicomflow.qr.identifier.FindQuery` as one SQL statement on the index, composed with :mod:`psycopg.sql`.

The tenant is always the first condition; every value is a bound parameter.
Matching keys become conditions on the series rows (``dicom_state_meta s``:
they carry the patient's and the study's attributes too) and, at IMAGE level,
on the instance rows (``dicom_image_meta i``). A PATIENT or STUDY answer is
one row per patient / study: the newest series row's attributes with the
counts (and ModalitiesInStudy) over all its series, as QIDO-RS answers
(:mod:`dicomflow.store.queries`, whose text matching is used here too).
Rows come in a stable order, at most ``limit`` of them.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from dicomflow.qr.identifier import Condition, FindQuery
from dicomflow.store.queries import Text, like_pattern, text_match


def _column(condition: Condition) -> sql.Identifier:
    attribute = condition.attribute
    column = "modality" if attribute.keyword == "ModalitiesInStudy" else attribute.column
    return sql.Identifier("i" if attribute.level == "IMAGE" else "s", column)


def _text(column: sql.Composable, value: str, params: list[Any], *, case_insensitive: bool) -> sql.Composable:
    wild = "*" in value or "?" in value
    if wild or case_insensitive:
        return text_match(column, Text(like_pattern(value), like=wild, case_insensitive=case_insensitive), params)
    return text_match(column, Text(value), params)


def condition_sql(condition: Condition, params: list[Any]) -> sql.Composable:
    """One matching key as a SQL condition (its values appended to ``params``)."""
    column = _column(condition)
    kind = condition.attribute.match
    if kind in ("uid", "modality"):
        params.append(list(condition.values))
        return sql.SQL("{} = ANY(%s)").format(column)
    if kind in ("text", "pn"):
        parts = [_text(column, v, params, case_insensitive=kind == "pn") for v in condition.values]
        return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(" OR ").join(parts))
    if kind == "int":
        params.append(condition.number)
        return sql.SQL("{} = %s").format(column)
    bounds: list[sql.Composable] = []
    if condition.start is not None:
        params.append(condition.start)
        bounds.append(sql.SQL("{} >= %s").format(column))
    if condition.end is not None:
        params.append(condition.end)
        bounds.append(sql.SQL("{} <= %s").format(column))
    return sql.SQL(" AND ").join(bounds)


def _where(tenant: str, query: FindQuery, params: list[Any]) -> sql.Composable:
    params.append(tenant)
    parts: list[sql.Composable] = [sql.SQL("s.tenant_id = %s")]
    parts += [condition_sql(c, params) for c in query.conditions]
    return sql.SQL(" AND ").join(parts)


#: One lateral pass over a patient's / study's series rows gives the counts and the newest row (as a record).
_PATIENT = (
    "WITH hits AS (SELECT s.patient_id FROM dicom_state_meta s WHERE {where}"
    " GROUP BY s.patient_id ORDER BY s.patient_id LIMIT %s) "
    "SELECT (agg.latest).*, agg.n_studies, agg.n_series, agg.n_instances FROM hits "
    "JOIN LATERAL (SELECT (array_agg(x ORDER BY x.updated_time DESC))[1] AS latest,"
    " count(DISTINCT x.study_uid) AS n_studies, count(*) AS n_series,"
    " coalesce(sum(x.series_related_instances), 0) AS n_instances"
    " FROM dicom_state_meta x WHERE x.tenant_id = %s AND x.patient_id = hits.patient_id) agg ON true "
    "ORDER BY hits.patient_id"
)
_STUDY = (
    "WITH hits AS (SELECT s.study_uid, max(s.study_date) AS d FROM dicom_state_meta s WHERE {where}"
    " GROUP BY s.study_uid ORDER BY d DESC, s.study_uid LIMIT %s) "
    "SELECT (agg.latest).*, agg.n_series, agg.n_instances, agg.modalities FROM hits "
    "JOIN LATERAL (SELECT (array_agg(x ORDER BY x.updated_time DESC))[1] AS latest,"
    " count(*) AS n_series, coalesce(sum(x.series_related_instances), 0) AS n_instances,"
    " array_agg(DISTINCT x.modality) FILTER (WHERE x.modality IS NOT NULL) AS modalities"
    " FROM dicom_state_meta x WHERE x.tenant_id = %s AND x.study_uid = hits.study_uid) agg ON true "
    "ORDER BY hits.d DESC, hits.study_uid"
)
_SERIES = (
    "SELECT s.* FROM dicom_state_meta s WHERE {where} "
    "ORDER BY s.study_uid, s.series_number NULLS LAST, s.series_uid LIMIT %s"
)
_IMAGE = (
    "SELECT i.sop_uid, i.sop_class_uid, i.instance_number, i.content_date, i.content_time, i.image_type,"
    " i.photometric_interpretation, i.width AS rows, i.columns, i.bits_allocated, o.number_of_frames, s.* "
    "FROM dicom_image_meta i "
    "JOIN dicom_state_meta s ON s.tenant_id = i.tenant_id AND s.study_uid = i.study_uid AND s.series_uid = i.series_uid "
    "LEFT JOIN LATERAL (SELECT r.number_of_frames FROM dicom_object_meta r WHERE r.tenant_id = i.tenant_id"
    " AND r.study_uid = i.study_uid AND r.series_uid = i.series_uid AND r.sop_uid = i.sop_uid"
    " ORDER BY r.created_time DESC LIMIT 1) o ON true "
    "WHERE {where} ORDER BY i.series_uid, i.instance_number NULLS LAST, i.sop_uid LIMIT %s"
)
_TEMPLATES = {"PATIENT": _PATIENT, "STUDY": _STUDY, "SERIES": _SERIES, "IMAGE": _IMAGE}


def find_sql(query: FindQuery, tenant: str, limit: int) -> tuple[sql.Composed, list[Any]]:
    """The statement answering ``query`` within ``tenant`` (at most ``limit`` rows) and its parameters."""
    params: list[Any] = []
    where = _where(tenant, query, params)
    params.append(limit)
    if query.level in ("PATIENT", "STUDY"):
        params.append(tenant)
    return sql.SQL(_TEMPLATES[query.level]).format(where=where), params


__all__ = ["condition_sql", "find_sql"]
