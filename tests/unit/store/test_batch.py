"""Pure logic of the store: batch merging and ordering, lock keys, SQL shape, migration files."""

from __future__ import annotations

import datetime as dt
import re

import msgspec
import psycopg
import pytest

from dicomflow import models
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.store import available_migrations, series_lock_key
from dicomflow.store.batch import Batch, strip_nul
from dicomflow.store.session import copy_culprit
from dicomflow.store.sql import IMAGES, RECEIPTS, STATES

T0 = dt.datetime(2024, 1, 2, 3, 4, 5)


def receipt(series: str, sop: str, trace: str, node: str = "n1") -> DicomStoreMeta:
    return DicomStoreMeta(
        trace_id=trace, worker_node_id=node, tenant_id="t", patient_id="p", study_uid="1.2", series_uid=series,
        sop_uid=sop, file_size=1, file_path=f"/s/{sop}.dcm", transfer_syntax_uid="1.2.840.10008.1.2.1",
        number_of_frames=1, created_time=T0, series_uid_hash=models.uid_hash(series), study_uid_hash=models.uid_hash("1.2"),
        target_ts="1.2.840.10008.1.2.1", study_date=dt.date(2024, 1, 2), transfer_status="Success",
        source_ip="127.0.0.1", source_ae="AE",
    )


def state(series: str, created: dt.datetime = T0, desc: str = "d", tenant: str = "t") -> DicomStateMeta:
    return DicomStateMeta(
        tenant_id=tenant, patient_id="p", study_uid="1.2", series_uid=series, study_uid_hash="0" * 20,
        series_uid_hash="0" * 20, study_date_origin="20240102", study_date=dt.date(2024, 1, 2),
        series_description=desc, created_time=created, updated_time=created,
    )


def image(series: str, sop: str, number: int | None = None) -> DicomImageMeta:
    return DicomImageMeta(
        tenant_id="t", patient_id="p", study_uid="1.2", series_uid=series, sop_uid=sop, study_uid_hash="0" * 20,
        series_uid_hash="0" * 20, instance_number=number, transfer_syntax_uid="1.2.840.10008.1.2.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2", created_time=T0, updated_time=T0,
    )


TRACE_A = "00000000-0000-0000-0000-00000000000a"
TRACE_B = "00000000-0000-0000-0000-00000000000b"


def test_duplicates_merge_last_wins_and_rows_are_sorted_by_key() -> None:
    batch = Batch.prepare(
        [receipt("1.2.9", "1.2.9.1", TRACE_B), receipt("1.2.3", "1.2.3.1", TRACE_A, "first"),
         receipt("1.2.3", "1.2.3.1", TRACE_A, "second")],
        [state("1.2.9"), state("1.2.3", desc="old"), state("1.2.3", desc="new")],
        [image("1.2.9", "1.2.9.2", 1), image("1.2.3", "1.2.3.5", 1), image("1.2.9", "1.2.9.1"), image("1.2.3", "1.2.3.5", 2)],
    )
    assert [(r.trace_id, r.worker_node_id) for r in batch.receipts] == [(TRACE_A, "second"), (TRACE_B, "n1")]
    assert [(s.series_uid, s.series_description) for s in batch.states] == [("1.2.3", "new"), ("1.2.9", "d")]
    assert [(i.sop_uid, i.instance_number) for i in batch.images] == [("1.2.3.5", 2), ("1.2.9.1", None), ("1.2.9.2", 1)]
    assert batch.series == [("t", "1.2", "1.2.3"), ("t", "1.2", "1.2.9")]


def test_a_merged_state_keeps_the_first_created_time() -> None:
    later = T0 + dt.timedelta(hours=1)
    (merged,) = Batch.prepare([], [state("1.2.3", T0, "a"), state("1.2.3", later, "b")], []).states
    assert (merged.created_time, merged.series_description) == (T0, "b")


def test_states_of_different_tenants_are_different_rows() -> None:
    batch = Batch.prepare([], [state("1.2.3", tenant="b"), state("1.2.3", tenant="a")], [])
    assert [s.tenant_id for s in batch.states] == ["a", "b"]
    assert len(batch.locks) == 2


def test_locks_cover_every_written_series_in_ascending_order() -> None:
    batch = Batch.prepare(
        [receipt("1.2.7", "1.2.7.1", TRACE_A)], [state("1.2.3")], [image("1.2.5", "1.2.5.1")]
    )
    expected = sorted(series_lock_key("t", "1.2", s) for s in ("1.2.3", "1.2.5", "1.2.7"))
    assert batch.locks == expected
    # Receipts are locked but their series is not returned (receipts do not change states).
    assert batch.series == [("t", "1.2", "1.2.3"), ("t", "1.2", "1.2.5")]


def test_series_lock_key_is_stable_signed_64_bit_and_separates_fields() -> None:
    key = series_lock_key("t", "1.2", "1.2.3")
    assert key == series_lock_key("t", "1.2", "1.2.3")
    assert -(2**63) <= key < 2**63
    assert series_lock_key("t", "1.2", "1.2.3") != series_lock_key("t", "1.2.1", ".2.3")
    assert series_lock_key("t", "1.2", "1.2.3") != series_lock_key("u", "1.2", "1.2.3")


def test_nul_characters_are_stripped_and_can_merge_keys() -> None:
    clean = [state("1.2.3")]
    assert strip_nul(clean) is clean  # nothing to do: no copy
    batch = Batch.prepare([], [], [image("1.2.3", "1.2.3.1\x00", 1), image("1.2.3", "1.2.3.1", 2)])
    assert [(i.sop_uid, i.instance_number) for i in batch.images] == [("1.2.3.1", 1)]


def test_unencodable_text_is_left_for_the_copy_to_refuse() -> None:
    bad = [state("1.2.3", desc="x\udc80")]
    assert strip_nul(bad) is bad


def test_upsert_sql_keeps_created_time_and_never_moves_updated_time_back() -> None:
    conn_free = {t.name: t.upsert().as_string(None) for t in (RECEIPTS, STATES, IMAGES)}
    image_sql = conn_free["dicom_image_meta"]
    assert 'ON CONFLICT ("tenant_id", "study_uid", "series_uid", "sop_uid") DO UPDATE' in image_sql
    assert '"created_time" = ' not in image_sql
    assert '"updated_time" = GREATEST("t"."updated_time", "excluded"."updated_time")' in image_sql
    assert "ORDER BY" in image_sql and "IS DISTINCT FROM" in image_sql
    state_sql = conn_free["dicom_state_meta"]
    assert '"series_related_instances" = ' not in state_sql  # recomputed from the instance rows instead
    assert '"created_time" = "excluded"."created_time"' in conn_free["dicom_object_meta"]


def test_copy_error_line_names_the_record() -> None:
    records = [state("1.2.1"), state("1.2.2"), state("1.2.3")]

    class Diag:
        context = 'COPY dicomflow_batch_dicom_state_meta, line 2, column series_number: "x"'

    class Err(psycopg.DataError):
        @property
        def diag(self) -> Diag:  # type: ignore[override]
            return Diag()

    assert copy_culprit(Err("refused"), records) is records[1]
    Diag.context = "no line here"
    assert copy_culprit(Err("refused"), records) is None


def test_migration_files_are_numbered_in_order_and_start_with_the_schema() -> None:
    found = available_migrations()
    assert [m.version for m in found] == sorted(m.version for m in found)
    assert found[0].version == "0001"
    for m in found:
        assert re.fullmatch(r"\d{4}", m.version) and re.fullmatch(r"[a-z0-9_]+", m.name)
        assert len(m.checksum) == 64
    assert "CREATE TABLE dicom_state_meta" in found[0].sql


@pytest.mark.parametrize("model", [DicomStoreMeta, DicomStateMeta, DicomImageMeta])
def test_every_model_field_is_a_column_of_the_first_migration(model: type[msgspec.Struct]) -> None:
    """A cheap guard without a server; the integration test checks types and nullability."""
    text = "\n".join(m.sql for m in available_migrations())
    for name in model.__struct_fields__:
        assert re.search(rf"^\s+{name}\s", text, re.MULTILINE), f"{model.__name__}.{name} has no column"
