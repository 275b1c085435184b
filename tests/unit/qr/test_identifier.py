"""Identifier -> conditions -> SQL (PS3.4 C.2.2 matching), and result rows -> response identifiers: pure logic."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydicom.config
import pytest
from psycopg import sql
from pydicom.dataset import Dataset

from dicomflow.qr.exceptions import IdentifierError, MatchValueError
from dicomflow.qr.identifier import Condition, FindQuery, read_query
from dicomflow.qr.model import BY_KEYWORD
from dicomflow.qr.results import answer, decode_identifier, encode_identifier
from dicomflow.qr.sql import condition_sql, find_sql

STUDY_UID = "1.2.3.4"
SERIES_UID = "1.2.3.4.5"


def identifier(level: str, **keys: Any) -> Dataset:
    """An identifier as an SCU may send it (values not checked: some tests send bad ones on purpose)."""
    ds = Dataset()
    with pydicom.config.disable_value_validation():
        ds.QueryRetrieveLevel = level
        for key, value in keys.items():
            setattr(ds, key, value)
    return ds


def sql_of(condition: Condition) -> tuple[str, list[Any]]:
    params: list[Any] = []
    text = condition_sql(condition, params).as_string(None)
    return text, params


def only(query: FindQuery, keyword: str) -> Condition:
    (found,) = [c for c in query.conditions if c.attribute.keyword == keyword]
    return found


@pytest.mark.parametrize(("value", "expected", "param"), [
    ("Doe^John", '"s"."patient_name" ILIKE %s', "Doe^John"),
    ("Doe*", '"s"."patient_name" ILIKE %s', "Doe%"),
    ("D?e_10%", '"s"."patient_name" ILIKE %s', "D_e\\_10\\%"),
])
def test_person_names_match_case_insensitively_with_wildcards(value: str, expected: str, param: str) -> None:
    text, params = sql_of(only(read_query("study", identifier("STUDY", PatientName=value)), "PatientName"))
    assert text.startswith(expected) and params == [param]


def test_text_single_value_wildcard_and_universal() -> None:
    q = read_query("study", identifier("STUDY", AccessionNumber="A1", StudyID="1*", StudyDescription="*",
                                       StudyInstanceUID=""))
    assert sql_of(only(q, "AccessionNumber")) == ('"s"."accession_number" = %s', ["A1"])
    assert sql_of(only(q, "StudyID")) == ('"s"."study_id" LIKE %s ESCAPE \'\\\'', ["1%"])
    assert [c.attribute.keyword for c in q.conditions] == ["AccessionNumber", "StudyID"]  # "*" and "": universal
    assert BY_KEYWORD["StudyDescription"].tag in q.return_tags and BY_KEYWORD["StudyInstanceUID"].tag in q.return_tags


@pytest.mark.parametrize(("value", "start", "end"), [
    ("20240105", dt.date(2024, 1, 5), dt.date(2024, 1, 5)),
    ("20240101-20241231", dt.date(2024, 1, 1), dt.date(2024, 12, 31)),
    ("20240101-", dt.date(2024, 1, 1), None),
    ("-20240101", None, dt.date(2024, 1, 1)),
    ("2024.01.05", dt.date(2024, 1, 5), dt.date(2024, 1, 5)),
])
def test_date_single_value_and_ranges(value: str, start: dt.date | None, end: dt.date | None) -> None:
    condition = only(read_query("study", identifier("STUDY", StudyDate=value)), "StudyDate")
    assert (condition.start, condition.end) == (start, end)
    text, params = sql_of(condition)
    assert params == [d for d in (start, end) if d is not None]
    assert text.count("%s") == len(params)


@pytest.mark.parametrize(("value", "start", "end"), [
    ("1030", dt.time(10, 30), dt.time(10, 30, 59, 999999)),
    ("08-0915", dt.time(8), dt.time(9, 15, 59, 999999)),
    ("101500.5", dt.time(10, 15, 0, 500000), dt.time(10, 15, 0, 599999)),
    ("-12", None, dt.time(12, 59, 59, 999999)),
])
def test_time_values_cover_their_precision(value: str, start: dt.time | None, end: dt.time | None) -> None:
    condition = only(read_query("study", identifier("STUDY", StudyTime=value)), "StudyTime")
    assert (condition.start, condition.end) == (start, end)


def test_uid_lists_and_modalities_match_any_value() -> None:
    q = read_query("study", identifier("STUDY", StudyInstanceUID=[STUDY_UID, "1.2.3.9"], ModalitiesInStudy=["CT", "MR"]))
    assert sql_of(only(q, "StudyInstanceUID")) == ('"s"."study_uid" = ANY(%s)', [[STUDY_UID, "1.2.3.9"]])
    assert sql_of(only(q, "ModalitiesInStudy")) == ('"s"."modality" = ANY(%s)', [["CT", "MR"]])


def test_image_level_keys_match_the_instance_rows() -> None:
    q = read_query("study", identifier("IMAGE", StudyInstanceUID=STUDY_UID, SeriesInstanceUID=SERIES_UID,
                                       SOPInstanceUID="1.2.3.4.5.6", InstanceNumber="3"))
    assert sql_of(only(q, "SOPInstanceUID"))[0] == '"i"."sop_uid" = ANY(%s)'
    assert sql_of(only(q, "InstanceNumber")) == ('"i"."instance_number" = %s', [3])


@pytest.mark.parametrize(("model", "ds", "why"), [
    ("study", identifier("STUDY"), None),
    ("study", Dataset(), "no QueryRetrieveLevel"),
    ("study", identifier("FRAME"), "not one of"),
    ("study", identifier("PATIENT", PatientID=""), "not one of"),
    ("patient", identifier("STUDY", StudyInstanceUID=""), "needs PatientID"),
    ("study", identifier("SERIES", SeriesInstanceUID=""), "needs StudyInstanceUID"),
    ("study", identifier("IMAGE", StudyInstanceUID=STUDY_UID, SeriesInstanceUID=""), "needs SeriesInstanceUID"),
    ("patient", identifier("PATIENT", PatientID="", StudyDate="20240101"), "relational"),
    ("study", identifier("STUDY", Modality="CT"), "relational"),
])
def test_only_hierarchical_queries_are_served(model: Any, ds: Dataset, why: str | None) -> None:
    if why is None:
        assert read_query(model, ds).level == "STUDY"
        return
    with pytest.raises(IdentifierError, match=why) as refused:
        read_query(model, ds)
    assert refused.value.status == 0xA900


def test_a_lower_level_key_without_value_is_an_empty_return_key() -> None:
    q = read_query("study", identifier("STUDY", Modality="", StudyInstanceUID=""))
    assert q.conditions == () and BY_KEYWORD["Modality"].tag in q.unsupported


@pytest.mark.parametrize(("keys", "why"), [
    ({"StudyDate": "2024-01-01-2024"}, "not a range"),
    ({"StudyDate": "20241301"}, "not a date"),
    ({"StudyTime": "1o30"}, "not a time"),
    ({"StudyTime": "2561"}, "not a time"),
    ({"StudyInstanceUID": "1.2.*"}, "not a UID"),
    ({"SeriesNumber": "3"}, "below the STUDY"),
])
def test_unreadable_matching_values_are_unable_to_process(keys: dict[str, str], why: str) -> None:
    with pytest.raises((MatchValueError, IdentifierError), match=why):
        read_query("study", identifier("STUDY", **keys))


def test_find_sql_binds_the_tenant_first_and_the_limit() -> None:
    q = read_query("patient", identifier("PATIENT", PatientName="Doe*"))
    statement, params = find_sql(q, "tenant-a", 11)
    assert isinstance(statement, sql.Composed)
    assert params == ["tenant-a", "Doe%", 11, "tenant-a"]
    text = statement.as_string(None)
    assert text.count("%s") == len(params) and "GROUP BY s.patient_id" in text
    q = read_query("study", identifier("SERIES", StudyInstanceUID=STUDY_UID))
    statement, params = find_sql(q, "t", 5)
    assert params == ["t", [STUDY_UID], 5]


def test_answers_hold_every_key_asked_in_utf8() -> None:
    ds = identifier("STUDY", PatientName="", StudyDate="", StudyTime="", StudyInstanceUID="", ModalitiesInStudy="",
                    NumberOfStudyRelatedInstances="", ReferringPhysicianName="", Modality="", RetrieveAETitle="")
    ds.add_new(0x00081110, "SQ", [])  # ReferencedStudySequence: a sequence, answered empty
    wire = encode_identifier(ds, "1.2.840.10008.1.2")
    q = read_query("study", decode_identifier(wire, "1.2.840.10008.1.2"))
    row = {"patient_name": "Dörte^Zoë", "study_date": dt.date(2024, 1, 5), "study_time": dt.time(8, 15, 0, 120000),
           "study_uid": STUDY_UID, "modalities": ["MR", "CT"], "n_instances": 4, "modality": "CT"}
    made = answer(q, row, "DICOMFLOW")
    for syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"):  # written directly: the bytes pydicom writes
        assert made.encode(syntax) == encode_identifier(made.dataset(), syntax), syntax
    assert decode_identifier(made.encode("1.2.840.10008.1.2.2"), "1.2.840.10008.1.2.2").PatientName == "Dörte^Zoë"
    out = decode_identifier(made.encode("1.2.840.10008.1.2.1"), "1.2.840.10008.1.2.1")
    assert out.SpecificCharacterSet == "ISO_IR 192" and out.QueryRetrieveLevel == "STUDY"
    assert str(out.PatientName) == "Dörte^Zoë"
    assert (out.StudyDate, out.StudyTime, out.StudyInstanceUID) == ("20240105", "081500.120000", STUDY_UID)
    assert list(out.ModalitiesInStudy) == ["CT", "MR"] and out.NumberOfStudyRelatedInstances == 4
    assert out.ReferringPhysicianName == "" and out.Modality == ""  # not held / below the level: empty
    assert out.RetrieveAETitle == "DICOMFLOW" and out.ReferencedStudySequence == []
