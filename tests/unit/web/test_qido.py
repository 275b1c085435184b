"""QIDO-RS query parameters -> Filters: what is matched, what is refused (400), what only warns."""

from __future__ import annotations

import datetime as dt

import pytest

from dicomflow.store.queries import DateRange, Filters, Text
from dicomflow.web.qido import DEFAULT_LIMIT, MAX_LIMIT, QueryError, parse


def test_no_parameters_is_every_study_up_to_the_default_limit() -> None:
    query = parse("study", [])
    assert query.filters == Filters(limit=DEFAULT_LIMIT)
    assert (query.include, query.include_all, query.warnings, query.scope) == (frozenset(), False, (), {})


def test_text_keys_by_keyword_or_tag_exact_or_wildcard() -> None:
    f = parse("study", [("PatientID", "P1"), ("00100010", "doe^j*"), ("AccessionNumber", "A?1_%")]).filters
    assert f.patient_id == Text("P1")
    assert f.patient_name == Text("doe^j%", like=True, case_insensitive=True)  # PN: case-insensitive
    assert f.accession_number == Text("A_1\\_\\%", like=True)  # LIKE's own characters are escaped


def test_an_exact_patient_name_is_still_case_insensitive_and_a_universal_match_is_no_filter() -> None:
    f = parse("study", [("PatientName", "Doe_J"), ("PatientID", "*"), ("AccessionNumber", "")]).filters
    assert f.patient_name == Text("Doe\\_J", like=False, case_insensitive=True)
    assert f.patient_id is None and f.accession_number is None


@pytest.mark.parametrize(("value", "expected"), [
    ("20240305", DateRange(dt.date(2024, 3, 5), dt.date(2024, 3, 5))),
    ("20240101-20241231", DateRange(dt.date(2024, 1, 1), dt.date(2024, 12, 31))),
    ("20240101-", DateRange(dt.date(2024, 1, 1), None)),
    ("-20240101", DateRange(None, dt.date(2024, 1, 1))),
    ("2024.03.05", DateRange(dt.date(2024, 3, 5), dt.date(2024, 3, 5))),
    ("  ", None),
])
def test_study_date_forms(value: str, expected: DateRange | None) -> None:
    assert parse("study", [("StudyDate", value)]).filters.study_date == expected


@pytest.mark.parametrize("value", ["2024", "20240230", "20240101-20240201-20240301", "-", "x-20240101"])
def test_bad_study_dates_are_refused(value: str) -> None:
    with pytest.raises(QueryError, match="StudyDate"):
        parse("study", [("StudyDate", value)])


def test_uid_lists_comma_backslash_and_repeated_keys_join() -> None:
    f = parse("instance", [("StudyInstanceUID", "1.2,1.3"), ("StudyInstanceUID", "1.4"),
                           ("SeriesInstanceUID", "1.2.3\\1.2.4"), ("SOPInstanceUID", " 1.2.3.4 ")]).filters
    assert (f.study_uids, f.series_uids, f.sop_uids) == (("1.2", "1.3", "1.4"), ("1.2.3", "1.2.4"), ("1.2.3.4",))


def test_the_path_scope_narrows_the_uid_lists() -> None:
    scope = {"StudyInstanceUID": "1.2"}
    assert parse("series", [], scope).filters.study_uids == ("1.2",)
    assert parse("series", [("StudyInstanceUID", "1.2,1.3")], scope).filters.study_uids == ("1.2",)
    assert parse("series", [("StudyInstanceUID", "1.3")], scope).filters.study_uids == ("",)  # matches nothing
    assert parse("series", [], scope).scope == scope


def test_modalities_at_series_and_study_level() -> None:
    assert parse("series", [("Modality", "CT,MR\\*")]).filters.modalities == ("CT", "MR")
    assert parse("study", [("ModalitiesInStudy", "US")]).filters.modalities == ("US",)
    with pytest.raises(QueryError, match="cannot both be given"):
        parse("instance", [("Modality", "CT"), ("ModalitiesInStudy", "CT")])


@pytest.mark.parametrize(("level", "params", "reason"), [
    ("study", [("Modality", "CT")], "Modality is not a matching key this server supports at study level"),
    ("study", [("SeriesInstanceUID", "1.2")], "not a matching key"),
    ("series", [("SOPInstanceUID", "1.2")], "not a matching key"),
    ("study", [("BodyPartExamined", "HEAD")], "BodyPartExamined is not a matching key"),
    ("study", [("NoSuchKeyword", "x")], "'NoSuchKeyword' is not a query parameter"),
    ("study", [("PatientID", "a"), ("PatientID", "b")], "PatientID given twice"),
    ("study", [("StudyInstanceUID", "1.2.x")], "StudyInstanceUID: '1.2.x' is not a UID"),
    ("study", [("limit", "ten")], "limit: 'ten' is not an integer"),
    ("study", [("limit", "-1")], "limit: must be between"),
    ("study", [("offset", "-5")], "offset: must be between"),
    ("study", [("fuzzymatching", "maybe")], "fuzzymatching: 'maybe' is not true or false"),
    ("study", [("includefield", "NotAKeyword")], "includefield: 'NotAKeyword' is not a DICOM keyword or tag"),
])
def test_what_cannot_be_honoured_is_refused_naming_it(level: str, params: list[tuple[str, str]], reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        parse(level, params)  # type: ignore[arg-type]


def test_limit_and_offset() -> None:
    f = parse("study", [("limit", "25"), ("offset", "50")]).filters
    assert (f.limit, f.offset) == (25, 50)


@pytest.mark.parametrize("limit", [str(MAX_LIMIT + 1), "0"])
def test_a_limit_over_the_maximum_or_zero_returns_the_maximum_with_a_warning(limit: str) -> None:
    query = parse("study", [("limit", limit)])
    assert query.filters.limit == MAX_LIMIT
    assert query.warnings == (f"limit {limit} exceeds what this server returns at once; {MAX_LIMIT} returned",)


def test_fuzzy_matching_is_answered_literally_with_a_warning() -> None:
    assert parse("study", [("fuzzymatching", "TRUE")]).warnings == (
        "fuzzymatching is not supported; literal matching was used",)
    assert parse("study", [("fuzzymatching", "false")]).warnings == ()


def test_includefield_by_keyword_or_tag_and_all() -> None:
    query = parse("study", [("includefield", "StudyDescription, 00101010"), ("includefield", "")])
    assert query.include == {"StudyDescription", "PatientAge"} and not query.include_all
    assert parse("study", [("includefield", "all")]).include_all
