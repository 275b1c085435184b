"""QIDO-RS query parameters -> Filters: what is matched, what is refused (400), what only warns."""

from __future__ import annotations

import datetime as dt

import pytest

from dicomflow.store.queries import DateRange, Filters, NameWords, Text, TimeRange
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


@pytest.mark.parametrize(("value", "words"), [
    ("jo do", ("jo", "do")),
    ("Doe^John", ("Doe", "John")),
    ("DOE, J", ("DOE", "J")),
    ("Yamada=山田", ("Yamada", "山田")),
    ("*smi*", ("*smi*",)),            # OHIF with supportsWildcard: the wildcards stay
    ("o'b_r", ("o'b_r",)),
])
def test_fuzzy_patient_name_is_words_each_beginning_a_name_component(value: str, words: tuple[str, ...]) -> None:
    query = parse("study", [("fuzzymatching", "TRUE"), ("PatientName", value)])
    assert (query.filters.patient_name_words, query.filters.patient_name) == (NameWords(words), None)
    assert query.warnings == ()


def test_fuzzy_matching_applies_to_names_only_and_false_is_literal() -> None:
    f = parse("study", [("PatientName", "Doe*"), ("fuzzymatching", "true"), ("PatientID", "P1*")]).filters
    assert f.patient_name_words == NameWords(("Doe*",))  # the order of the parameters does not matter
    assert f.patient_id == Text("P1%", like=True)
    literal = parse("study", [("fuzzymatching", "false"), ("PatientName", "jo do")]).filters
    assert (literal.patient_name, literal.patient_name_words) == (Text("jo do", like=False, case_insensitive=True), None)
    universal = parse("study", [("fuzzymatching", "true"), ("PatientName", " ^* ")]).filters
    assert (universal.patient_name, universal.patient_name_words) == (None, None)


def test_study_description_is_a_wildcard_key() -> None:
    f = parse("study", [("StudyDescription", "*CHEST*")]).filters
    assert f.study_description == Text("%CHEST%", like=True)
    assert parse("series", [("00081030", "Head")]).filters.study_description == Text("Head")


@pytest.mark.parametrize(("value", "expected"), [
    ("103000", TimeRange(dt.time(10, 30), dt.time(10, 30, 0, 999999))),
    ("10", TimeRange(dt.time(10), dt.time(10, 59, 59, 999999))),
    ("1030-1200", TimeRange(dt.time(10, 30), dt.time(12, 0, 59, 999999))),
    ("0800-", TimeRange(dt.time(8), None)),
    ("-17:30", TimeRange(None, dt.time(17, 30, 59, 999999))),
    ("101500.25-101500.5", TimeRange(dt.time(10, 15, 0, 250000), dt.time(10, 15, 0, 599999))),
    ("", None),
])
def test_study_time_forms(value: str, expected: TimeRange | None) -> None:
    assert parse("study", [("StudyTime", value)]).filters.study_time == expected


@pytest.mark.parametrize("value", ["1", "2500", "1060", "10.5", "-", "10-11-12", "ab"])
def test_bad_study_times_are_refused(value: str) -> None:
    with pytest.raises(QueryError, match="StudyTime"):
        parse("study", [("StudyTime", value)])


def test_study_date_and_time_together_are_kept_for_one_combined_range() -> None:
    f = parse("study", [("StudyDate", "20240101-20240102"), ("StudyTime", "2200-0600")]).filters
    assert f.study_date == DateRange(dt.date(2024, 1, 1), dt.date(2024, 1, 2))
    assert f.study_time == TimeRange(dt.time(22), dt.time(6, 0, 59, 999999))


def test_what_ohif_study_list_sends_is_answered() -> None:
    """The parameters of OHIF 3.13's study list (extensions/default/src/DicomWebDataSource/qido.js mapParams)."""
    query = parse("study", [
        ("PatientName", "*doe*"), ("00100020", "*123*"), ("AccessionNumber", "*A1*"),
        ("StudyDescription", "*CT*"), ("ModalitiesInStudy", "CT,MR"), ("limit", "101"), ("offset", "0"),
        ("fuzzymatching", "false"), ("includefield", "00081030,00080060,00080090,00100030"),
        ("StudyDate", "19700102-20241231"), ("StudyInstanceUID", "1.2.3\\1.2.4"),
    ])
    f = query.filters
    assert f.patient_name == Text("%doe%", like=True, case_insensitive=True)
    assert (f.patient_id, f.accession_number, f.study_description) == (
        Text("%123%", like=True), Text("%A1%", like=True), Text("%CT%", like=True))
    assert f.modalities == ("CT", "MR") and f.study_uids == ("1.2.3", "1.2.4")
    assert f.study_date == DateRange(dt.date(1970, 1, 2), dt.date(2024, 12, 31))
    assert (f.limit, f.offset) == (101, 0)
    assert {"StudyDescription", "Modality", "ReferringPhysicianName", "PatientBirthDate"} <= query.include
    assert query.warnings == ()


def test_includefield_by_keyword_or_tag_and_all() -> None:
    query = parse("study", [("includefield", "StudyDescription, 00101010"), ("includefield", "")])
    assert query.include == {"StudyDescription", "PatientAge"} and not query.include_all
    assert parse("study", [("includefield", "all")]).include_all
