"""The warehouse schema follows the wire-format model field for field."""

from __future__ import annotations

import duckdb
import msgspec
import pytest

from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.warehouse.ddl_duckdb import duckdb_ddl, statements
from dicomflow.warehouse.schema import AUDIT_KEY_COLUMN, TABLES, audit_event_key, table


def _fields(model: type[msgspec.Struct]) -> list[str]:
    return list(model.__struct_fields__)


@pytest.mark.parametrize(
    ("name", "model"),
    [("receipts", DicomStoreMeta), ("series_states", DicomStateMeta), ("instances", DicomImageMeta)],
)
def test_every_wire_field_is_one_column_in_order(name: str, model: type[msgspec.Struct]) -> None:
    t = table(name)
    assert t.model is model
    assert list(t.column_names) == _fields(model)


def test_audit_table_is_the_key_then_every_top_level_field() -> None:
    t = table("audit_events")
    assert list(t.column_names) == [AUDIT_KEY_COLUMN, *_fields(AuditEvent)]
    assert t.column("participant_objects").wire_type == "json"
    assert t.column("event_id").wire_type == "json"
    assert t.column("event_outcome").wire_type == "int32"
    assert t.column("event_date_time").wire_type == "datetime"


def test_types_nullability_and_limits_come_from_the_model() -> None:
    r = table("receipts")
    assert (r.column("file_size").wire_type, r.column("number_of_frames").wire_type) == ("int64", "int32")
    assert r.column("trace_id").max_bytes == 36
    assert r.column("file_path").max_bytes == 512
    assert r.column("accession_number").nullable and not r.column("sop_uid").nullable
    assert r.column("created_time").wire_type == "datetime" and r.column("study_date").wire_type == "date"
    i = table("instances")
    assert i.column("space_size").wire_type == "int64" and i.column("space_size").nullable
    assert i.column("width").wire_type == "int32"
    assert i.column("content_time").wire_type == "time"
    assert i.column("slice_thickness").wire_type == "float"
    s = table("series_states")
    assert s.column("study_date_origin").max_bytes == 8
    assert s.column("patient_sex").max_bytes == 1


def test_kinds_keys_versions_partitions() -> None:
    got = {t.name: (t.topic_attr, t.kind, t.version_column, t.partition_column) for t in TABLES}
    assert got == {
        "receipts": ("log", "append", None, "study_date"),
        "series_states": ("dicom_state", "latest", "updated_time", "study_date"),
        "instances": ("dicom_image", "latest", "updated_time", None),
        "audit_events": ("audit", "append", None, None),
    }
    assert table("receipts").key == ("trace_id",)
    assert table("instances").key[-1] == "sop_uid"


def test_unknown_table_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="receipts"):
        table("nope")


def test_audit_key_is_stable_under_reformatting_and_differs_by_content() -> None:
    from dicomflow.audit.events import application_activity

    e = application_activity(started=True, node_id="n1", tenant_id="t", application="x")
    raw = msgspec.json.encode(e)
    pretty = msgspec.json.format(raw, indent=2)
    assert audit_event_key(raw) == audit_event_key(pretty) == audit_event_key(e)
    other = application_activity(started=False, node_id="n1", tenant_id="t", application="x", when=e.event_date_time)
    assert audit_event_key(other) != audit_event_key(e)


def test_duckdb_ddl_runs_and_matches_the_schema() -> None:
    con = duckdb.connect()
    for stmt in statements():
        con.execute(stmt)
    for t in TABLES:
        cols = [r[0] for r in con.execute(f'DESCRIBE "{t.name}"').fetchall()]
        assert cols == list(t.stored_column_names)
    assert "CREATE TABLE IF NOT EXISTS _offsets" in duckdb_ddl()


def test_indexed_time_is_sink_metadata_not_a_wire_field() -> None:
    i = table("instances")
    assert [c.name for c in i.metadata] == ["indexed_time"] and i.metadata[0].wire_type == "datetime"
    assert "indexed_time" not in i.column_names and "indexed_time" not in i.wire_fields
    assert i.stored_column_names[-1] == "indexed_time"
    assert all(not t.metadata for t in TABLES if t.name != "instances")
    assert '"indexed_time" TIMESTAMP,  -- sink metadata, not a wire field' in duckdb_ddl()


def test_a_file_made_before_indexed_time_gets_the_column() -> None:
    con = duckdb.connect()
    old = [stmt.replace('    "indexed_time" TIMESTAMP,  -- sink metadata, not a wire field\n', "") for stmt in statements()]
    assert old != statements()
    for stmt in old[: len(TABLES) + 1]:  # the tables as an older sink created them
        con.execute(stmt)
    assert "indexed_time" not in [r[0] for r in con.execute('DESCRIBE "instances"').fetchall()]
    for stmt in statements():  # what the sink runs when it opens the file
        con.execute(stmt)
    assert [r[0] for r in con.execute('DESCRIBE "instances"').fetchall()][-1] == "indexed_time"
