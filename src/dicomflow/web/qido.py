"""QIDO-RS (PS3.18 §10.6): query parameters -> :class:`~dicomflow.store.queries.Filters` -> DICOM JSON.

Matching keys may be given by keyword (``PatientID``) or tag (``00100020``).
Supported, with what OHIF's study list sends (``PatientName=*smi*``,
``00100020=*123*``, ``AccessionNumber=*A1*``, ``StudyDescription=*CHEST*``,
``ModalitiesInStudy=CT,MR``, ``StudyDate=19700102-20241231``,
``StudyInstanceUID=1.2\\1.3``, ``fuzzymatching``, ``includefield``, ``limit``
and ``offset``):

- PatientID, AccessionNumber, StudyDescription: exact, or ``*`` / ``?``
  wildcards (PS3.4 C.2.2.2.4), case-sensitive as PS3.4 says for their VRs;
- PatientName: the same, case-insensitive (PS3.4 C.2.2.2.1 allows it for PN);
  with ``fuzzymatching=true`` each word of the value (split at spaces, ``^``,
  ``=`` and commas) must be the case-insensitive beginning of some component
  of the name (what ``^``, ``=`` and spaces separate), as Azure's DICOM service
  does: ``jo do``, ``DOE`` and ``Doe^J`` match ``Doe^John``, ``ohn`` does not;
  a word may hold ``*`` / ``?`` too;
- StudyDate (``A``, ``A-B``, ``A-``, ``-B``; ``YYYYMMDD``) and StudyTime
  (``HH``, ``HHMM``, ``HHMMSS[.F]``, the same range forms; a partial time is
  widened to the whole unit: ``10`` is 10:00:00-10:59:59.999999). Both given:
  one combined date-time range (PS3.4 C.2.2.2.5.1), ``StudyDate=20240101-20240102``
  with ``StudyTime=2200-0600`` is 1 January 22:00 to 2 January 06:00. A series
  without StudyTime does not match a StudyTime condition (on a boundary day);
- StudyInstanceUID / SeriesInstanceUID / SOPInstanceUID (one value or a
  comma / backslash separated list), Modality and ModalitiesInStudy.

An attribute the index does not hold is refused with 400 naming it, never
ignored silently; ``includefield`` of such an attribute is ignored (nothing
to add).

The answer attributes are those of PS3.18 Table 10.6.3-3..5 that the index
holds, plus any ``includefield`` the index can supply (``all``: everything).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from dicomflow.dicom.derived import uid_problem
from dicomflow.store.queries import Filters, Row
from dicomflow.web import dicomjson, matching
from dicomflow.web.context import WebContext, base_url, check_uid, client_address
from dicomflow.web.dicomjson import Json
from dicomflow.web.matching import QueryError
from dicomflow.web.negotiation import require_or_406

Level = Literal["study", "series", "instance"]

DEFAULT_LIMIT = 1000
#: The default of ``web.max_limit``: a larger ``limit`` is clamped to it (with a ``Warning: 299``).
MAX_LIMIT = 1000

# Tags used here, by keyword for readability.
T = {
    k: int(dicomjson.parse_tag(k) or 0)
    for k in (
        "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
        "ModalitiesInStudy", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight", "StudyInstanceUID", "StudyID",
        "StudyDescription", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "Modality",
        "SeriesDescription", "SeriesNumber", "SeriesInstanceUID", "NumberOfSeriesRelatedInstances",
        "SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName", "SOPClassUID", "SOPInstanceUID",
        "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "AvailableTransferSyntaxUID",
    )
}

#: Matching keys per level (the study keys also match at series and instance level).
_STUDY_KEYS = {"PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyTime", "StudyDescription",
               "StudyInstanceUID", "ModalitiesInStudy"}
_SERIES_KEYS = _STUDY_KEYS | {"SeriesInstanceUID", "Modality"}
_INSTANCE_KEYS = _SERIES_KEYS | {"SOPInstanceUID"}
MATCH_KEYS: dict[Level, set[str]] = {"study": _STUDY_KEYS, "series": _SERIES_KEYS, "instance": _INSTANCE_KEYS}

#: Default answer attributes (Table 10.6.3-3..5), restricted to what the index holds.
_STUDY_DEFAULT = ("SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
                  "ModalitiesInStudy", "RetrieveURL", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                  "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
_STUDY_EXTRA = ("StudyDescription", "PatientBirthTime", "PatientAge", "PatientSize", "PatientWeight")
_SERIES_DEFAULT = ("SpecificCharacterSet", "Modality", "SeriesDescription", "SeriesNumber", "SeriesInstanceUID",
                   "NumberOfSeriesRelatedInstances", "RetrieveURL", "StudyInstanceUID", "InstanceAvailability")
_SERIES_EXTRA = ("SeriesDate", "SeriesTime", "BodyPartExamined", "ProtocolName")
_INSTANCE_DEFAULT = ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability", "RetrieveURL",
                     "InstanceNumber", "Rows", "Columns", "BitsAllocated", "NumberOfFrames", "StudyInstanceUID",
                     "SeriesInstanceUID")
_INSTANCE_EXTRA = ("AvailableTransferSyntaxUID",)


@dataclass(frozen=True)
class Query:
    """A parsed QIDO-RS request."""

    level: Level
    filters: Filters
    include: frozenset[str] = frozenset()
    include_all: bool = False
    warnings: tuple[str, ...] = ()
    #: The study / series path segments (``/studies/{study}/series``), also applied as filters.
    scope: dict[str, str] = field(default_factory=dict)


def _uids(value: str, key: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in re.split(r"[,\\]", value) if p.strip())
    for uid in parts:
        problem = uid_problem(uid)
        if problem is not None:
            raise QueryError(f"{key}: {uid[:80]!r} is not a UID: {problem}")
    return parts


def _int(value: str, key: str, low: int, high: int) -> int:
    # ASCII digits only: int() also takes "1_000", " 7" and other scripts' digits ("\u0661").
    if re.fullmatch(r"-?[0-9]{1,20}", value) is None:
        raise QueryError(f"{key}: {value[:80]!r} is not an integer")
    number = int(value)
    if not low <= number <= high:
        raise QueryError(f"{key}: must be between {low} and {high}")
    return number


@dataclass
class _Params:
    """The query parameters as read, before they become :class:`Filters`."""

    values: dict[str, str] = field(default_factory=dict)  # matching key -> value (repeated UID keys joined)
    include: set[str] = field(default_factory=set)
    include_all: bool = False
    fuzzy: bool = False
    warnings: list[str] = field(default_factory=list)
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    max_limit: int = MAX_LIMIT


def parse(level: Level, params: Sequence[tuple[str, str]], scope: Mapping[str, str] | None = None, *,
          max_limit: int = MAX_LIMIT) -> Query:
    """Turn ``(name, value)`` query parameters into a :class:`Query`; ``limit`` is clamped to ``max_limit``.

    Raises:
        QueryError: an unknown or unsupported key, or a value of the wrong form.
    """
    scope = dict(scope or {})
    read = _Params(limit=min(DEFAULT_LIMIT, max_limit), max_limit=max_limit)
    for name, value in params:
        if not _control(read, name, value):
            _match_key(read, level, name, value)
    return Query(level, _filters(read, scope), frozenset(read.include), read.include_all, tuple(read.warnings), scope)


def _control(read: _Params, name: str, value: str) -> bool:
    """``limit``, ``offset``, ``fuzzymatching``, ``includefield``: True when ``name`` is one of them."""
    if name == "limit":
        read.limit = _int(value, name, 0, 2**31 - 1)
        if read.limit > read.max_limit or read.limit == 0:  # the number, not the text, goes into the header
            read.warnings.append(f"limit {read.limit} exceeds what this server returns at once; "
                                 f"{read.max_limit} returned")
            read.limit = read.max_limit
    elif name == "offset":
        read.offset = _int(value, name, 0, 2**31 - 1)
    elif name == "fuzzymatching":
        read.fuzzy = value.lower() == "true"
        if not read.fuzzy and value.lower() != "false":
            raise QueryError(f"fuzzymatching: {value!r} is not true or false")
    elif name == "includefield":
        for item in (v.strip() for v in value.split(",")):
            if item == "all":
                read.include_all = True
            elif item:
                tag = dicomjson.parse_tag(item)
                if tag is None:
                    raise QueryError(f"includefield: {item!r} is not a DICOM keyword or tag")
                read.include.add(dicomjson.keyword(tag))
    else:
        return False
    return True


def _match_key(read: _Params, level: Level, name: str, value: str) -> None:
    """A matching key by keyword or tag: refused unless the index holds it at ``level``."""
    tag = dicomjson.parse_tag(name)
    if tag is None:
        raise QueryError(f"{name!r} is not a query parameter, DICOM keyword or tag")
    key = dicomjson.keyword(tag)
    if key not in MATCH_KEYS[level]:
        raise QueryError(f"{key} is not a matching key this server supports at {level} level "
                         f"(supported: {', '.join(sorted(MATCH_KEYS[level]))})")
    if key in read.values:
        if key not in _UID_KEYS:
            raise QueryError(f"{key} given twice")
        value = f"{read.values[key]},{value}"  # a repeated UID key is one list (PS3.18 §8.3.4.1)
    read.values[key] = value


#: UID matching keys -> the :class:`Filters` field of their lists.
_UID_KEYS = {"StudyInstanceUID": "study_uids", "SeriesInstanceUID": "series_uids", "SOPInstanceUID": "sop_uids"}


def _filters(read: _Params, scope: Mapping[str, str]) -> Filters:
    """The matching keys as :class:`Filters`; a path scope narrows the UID lists (a UID outside it matches nothing)."""
    values = read.values
    uid_lists: dict[str, tuple[str, ...]] = {}
    for key, attr in _UID_KEYS.items():
        given = _uids(values[key], key) if key in values else ()
        if key in scope:
            given = (scope[key],) if not given or scope[key] in given else ("",)  # "" matches nothing
        uid_lists[attr] = given
    if "Modality" in values and "ModalitiesInStudy" in values:
        raise QueryError("Modality and ModalitiesInStudy cannot both be given")
    modalities = tuple(m.strip() for m in re.split(r"[,\\]", values.get("Modality", values.get("ModalitiesInStudy", "")))
                       if m.strip() and m.strip() != "*")
    name = values.get("PatientName")
    return Filters(
        patient_id=matching.text(values["PatientID"]) if "PatientID" in values else None,
        patient_name=matching.text(name, case_insensitive=True) if name is not None and not read.fuzzy else None,
        patient_name_words=matching.name_words(name) if name is not None and read.fuzzy else None,
        accession_number=matching.text(values["AccessionNumber"]) if "AccessionNumber" in values else None,
        study_description=matching.text(values["StudyDescription"]) if "StudyDescription" in values else None,
        study_date=matching.date_range(values["StudyDate"], "StudyDate") if "StudyDate" in values else None,
        study_time=matching.time_range(values["StudyTime"], "StudyTime") if "StudyTime" in values else None,
        modalities=modalities,
        limit=read.limit,
        offset=read.offset,
        **uid_lists,
    )


# --------------------------------------------------------------------------- answers


def _wanted(query: Query, default: Sequence[str], extra: Sequence[str]) -> list[str]:
    if query.include_all:
        return [*default, *extra]
    return [*default, *(k for k in extra if k in query.include)]


def study_json(row: Row, query: Query, base: str) -> Json:
    """One study of :func:`~dicomflow.store.queries.search_studies` as DICOM JSON."""
    modalities = sorted(row.get("modalities") or [])
    values: dict[str, Any] = {
        "SpecificCharacterSet": "ISO_IR 192", "StudyDate": row["study_date"], "StudyTime": row["study_time"],
        "AccessionNumber": row["accession_number"], "InstanceAvailability": "ONLINE", "ModalitiesInStudy": modalities,
        "RetrieveURL": f"{base}/studies/{row['study_uid']}", "PatientName": row["patient_name"],
        "PatientID": row["patient_id"], "PatientBirthDate": row["patient_birth_date"], "PatientSex": row["patient_sex"],
        "StudyInstanceUID": row["study_uid"], "StudyID": row["study_id"],
        "NumberOfStudyRelatedSeries": row["series_count"], "NumberOfStudyRelatedInstances": row["instance_count"],
        "StudyDescription": row["study_description"],
        "PatientBirthTime": row.get("patient_birth_time"), "PatientAge": row.get("patient_age"),
        "PatientSize": row.get("patient_size"), "PatientWeight": row.get("patient_weight"),
    }
    return _encode(values, _wanted(query, _STUDY_DEFAULT, _STUDY_EXTRA))


def _study_values(row: Row, base: str) -> dict[str, Any]:
    return {
        "StudyDate": row["study_date"], "StudyTime": row["study_time"], "AccessionNumber": row["accession_number"],
        "PatientName": row["patient_name"], "PatientID": row["patient_id"],
        "PatientBirthDate": row["patient_birth_date"], "PatientSex": row["patient_sex"], "StudyID": row["study_id"],
        "StudyDescription": row["study_description"], "PatientBirthTime": row["patient_birth_time"],
        "PatientAge": row["patient_age"], "PatientSize": row["patient_size"], "PatientWeight": row["patient_weight"],
    }


_STUDY_OF_SERIES = ("StudyDate", "StudyTime", "AccessionNumber", "PatientName", "PatientID", "PatientBirthDate",
                    "PatientSex", "StudyID")


def series_json(row: Row, query: Query, base: str) -> Json:
    """One series row as DICOM JSON (with its study's attributes when searching all series)."""
    values = _study_values(row, base)
    values.update({
        "SpecificCharacterSet": "ISO_IR 192", "Modality": row["modality"], "SeriesDescription": row["series_description"],
        "SeriesNumber": row["series_number"], "SeriesInstanceUID": row["series_uid"],
        "NumberOfSeriesRelatedInstances": row["series_related_instances"],
        "RetrieveURL": f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}",
        "StudyInstanceUID": row["study_uid"], "InstanceAvailability": "ONLINE", "SeriesDate": row["series_date"],
        "SeriesTime": row["series_time"], "BodyPartExamined": row["body_part_examined"],
        "ProtocolName": row["protocol_name"],
    })
    default: tuple[str, ...] = _SERIES_DEFAULT
    if "StudyInstanceUID" not in query.scope:
        default = (*default, *_STUDY_OF_SERIES)
    return _encode(values, _wanted(query, default, (*_SERIES_EXTRA, *_STUDY_EXTRA)))


def instance_json(row: Row, query: Query, base: str) -> Json:
    """One instance row (joined with its series) as DICOM JSON."""
    values = _study_values(row, base)
    values.update({
        "SpecificCharacterSet": "ISO_IR 192", "SOPClassUID": row["sop_class_uid"], "SOPInstanceUID": row["sop_uid"],
        "InstanceAvailability": "ONLINE",
        "RetrieveURL": f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['sop_uid']}",
        "InstanceNumber": row["instance_number"], "Rows": row["rows"], "Columns": row["columns"],
        "BitsAllocated": row["bits_allocated"], "NumberOfFrames": row["number_of_frames"],
        "StudyInstanceUID": row["study_uid"], "SeriesInstanceUID": row["series_uid"],
        "AvailableTransferSyntaxUID": row["transfer_syntax_uid"], "Modality": row["modality"],
        "SeriesDescription": row["series_description"], "SeriesNumber": row["series_number"],
        "NumberOfSeriesRelatedInstances": row["series_related_instances"], "SeriesDate": row["series_date"],
        "SeriesTime": row["series_time"], "BodyPartExamined": row["body_part_examined"],
        "ProtocolName": row["protocol_name"],
    })
    default: tuple[str, ...] = _INSTANCE_DEFAULT
    if "SeriesInstanceUID" not in query.scope:
        default = (*default, "Modality", "SeriesNumber", "SeriesDescription")
    if "StudyInstanceUID" not in query.scope:
        default = (*default, *_STUDY_OF_SERIES)
    return _encode(values, _wanted(query, default, (*_INSTANCE_EXTRA, *_SERIES_EXTRA, *_STUDY_EXTRA)))


def _encode(values: Mapping[str, Any], keys: Sequence[str]) -> Json:
    return dicomjson.encode({T[k]: (None, values.get(k)) for k in dict.fromkeys(keys) if k in T})


# --------------------------------------------------------------------------- routes


def routes(ctx: WebContext) -> list[BaseRoute]:
    """GET /studies, /series, /instances and their study / series scoped forms."""
    from dicomflow.audit import dicomweb as dicomweb_audit
    from dicomflow.store import queries

    searches = {"study": (queries.search_studies, study_json), "series": (queries.search_series, series_json),
                "instance": (queries.search_instances, instance_json)}

    def endpoint(level: Level) -> Callable[[Request], Awaitable[Response]]:
        search, to_json = searches[level]

        async def handle(request: Request) -> Response:
            principal = await ctx.principal(request, "read")
            require_or_406(request.headers.get("accept"), _ANSWER_MEDIA, "a search's answer")
            scope: dict[str, str] = {}
            if "study" in request.path_params:
                scope["StudyInstanceUID"] = check_uid(request.path_params["study"], "StudyInstanceUID")
            if "series" in request.path_params:
                scope["SeriesInstanceUID"] = check_uid(request.path_params["series"], "SeriesInstanceUID")
            try:
                query = parse(level, request.query_params.multi_items(), scope, max_limit=ctx.settings.web.max_limit)
            except QueryError as exc:
                raise HTTPException(400, str(exc)) from exc
            async with ctx.db.connection() as conn:
                rows = await search(conn, principal.tenant, query.filters)
            base = base_url(request)
            body = _encoder.encode([to_json(row, query, base) for row in rows])
            headers = {"Warning": ", ".join(f'299 dicomflow "{w}"' for w in query.warnings)} if query.warnings else None
            ctx.audit([dicomweb_audit.query(node_id=ctx.settings.worker_node_id, tenant_id=principal.tenant,
                                   user=principal.user, user_address=client_address(request),
                                   resource=request.url.path, query_string=request.url.query, results=len(rows))])
            return Response(body, media_type="application/dicom+json", headers=headers)

        return handle

    return [
        Route("/studies", endpoint("study"), methods=["GET"]),
        Route("/series", endpoint("series"), methods=["GET"]),
        Route("/instances", endpoint("instance"), methods=["GET"]),
        Route("/studies/{study}/series", endpoint("series"), methods=["GET"]),
        Route("/studies/{study}/instances", endpoint("instance"), methods=["GET"]),
        Route("/studies/{study}/series/{series}/instances", endpoint("instance"), methods=["GET"]),
    ]


_encoder = msgspec.json.Encoder()
#: What a search is answered as (``application/json`` too: many clients ask for that); no XML.
_ANSWER_MEDIA = ("application/dicom+json", "application/json")


__all__ = ["DEFAULT_LIMIT", "MATCH_KEYS", "MAX_LIMIT", "Query", "QueryError", "instance_json", "parse",
           "routes", "series_json", "study_json"]
