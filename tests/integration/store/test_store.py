"""The PostgreSQL store against the real local server: schema, upserts, counts, faults.

Each test gets a fresh empty database (the ``database`` fixture). Fault tests
never stop the shared server: they terminate the store's backend from a
superuser connection, which is what a server restart looks like to a client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import kwargs_row
from typer.testing import CliRunner

from dicomflow import models
from dicomflow.errors import StoreError, is_poison
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.settings import DatabaseSettings
from dicomflow.stack import LocalStack
from dicomflow.store import PgStore, StoreDataError, available_migrations, series_lock_key
from dicomflow.store import migrate as migrations

TENANT = "hospital-a"
STUDY = "1.2.826.0.1.3680043.8.498.1"
T0 = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)


# --------------------------------------------------------------------------- records


def series_uid(n: int) -> str:
    return f"{STUDY}.{n}"


def sop_uid(series: int, n: int) -> str:
    return f"{STUDY}.{series}.{n}"


def receipt(series: int, n: int, *, when: dt.datetime = T0, trace_id: str | None = None) -> DicomStoreMeta:
    """A store event as the receiver publishes it."""
    se, sop = series_uid(series), sop_uid(series, n)
    return DicomStoreMeta(
        trace_id=trace_id or str(uuid.uuid4()),
        worker_node_id="node-1",
        tenant_id=TENANT,
        patient_id="PAT-0001",
        study_uid=STUDY,
        series_uid=se,
        sop_uid=sop,
        file_size=524_288 + n,
        file_path=f"/data/{TENANT}/{STUDY}/{se}/{sop}.dcm",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        number_of_frames=1,
        created_time=when,
        series_uid_hash=models.uid_hash(se),
        study_uid_hash=models.uid_hash(STUDY),
        accession_number="ACC-17",
        target_ts="1.2.840.10008.1.2.1",
        study_date=dt.date(2024, 5, 6),
        transfer_status="NoNeedTransfer",
        source_ip="10.0.0.7",
        source_ae="CT_SCANNER_1",
    )


def state(series: int, *, created: dt.datetime = T0, updated: dt.datetime = T0, **changes: Any) -> DicomStateMeta:
    """A series state as the extractor builds it (series_related_instances left for the store)."""
    se = series_uid(series)
    fields: dict[str, Any] = dict(
        tenant_id=TENANT,
        patient_id="PAT-0001",
        study_uid=STUDY,
        series_uid=se,
        study_uid_hash=models.uid_hash(STUDY),
        series_uid_hash=models.uid_hash(se),
        study_date_origin="20240506",
        patient_name="Doe^Jane",
        patient_sex="F",
        patient_birth_date=dt.date(1970, 1, 2),
        patient_birth_time=dt.time(3, 4, 5),
        patient_age="054Y",
        patient_size=1.68,
        patient_weight=61.5,
        study_date=dt.date(2024, 5, 6),
        study_time=dt.time(7, 8, 9, 500000),
        accession_number="ACC-17",
        study_id="17",
        study_description="CT CHEST",
        modality="CT",
        series_number=series,
        series_date=dt.date(2024, 5, 6),
        series_time=dt.time(7, 9, 0),
        series_description=f"AXIAL {series}",
        body_part_examined="CHEST",
        protocol_name="CHEST_ROUTINE",
        series_related_instances=None,
        created_time=created,
        updated_time=updated,
    )
    fields.update(changes)
    return DicomStateMeta(**fields)


def image(series: int, n: int, *, created: dt.datetime = T0, updated: dt.datetime = T0, **changes: Any) -> DicomImageMeta:
    """An instance record as the extractor builds it."""
    se, sop = series_uid(series), sop_uid(series, n)
    fields: dict[str, Any] = dict(
        tenant_id=TENANT,
        patient_id="PAT-0001",
        study_uid=STUDY,
        series_uid=se,
        sop_uid=sop,
        study_uid_hash=models.uid_hash(STUDY),
        series_uid_hash=models.uid_hash(se),
        instance_number=n,
        content_date=dt.date(2024, 5, 6),
        content_time=dt.time(7, 9, 1),
        image_type="ORIGINAL\\PRIMARY\\AXIAL",
        image_orientation_patient="1\\0\\0\\0\\1\\0",
        image_position_patient=f"-200\\-200\\{-n * 1.25}",
        slice_thickness=1.25,
        spacing_between_slices=1.25,
        slice_location=-n * 1.25,
        samples_per_pixel=1,
        photometric_interpretation="MONOCHROME2",
        width=512,
        columns=512,
        bits_allocated=16,
        bits_stored=12,
        high_bit=11,
        pixel_representation=0,
        rescale_intercept=-1024.0,
        rescale_slope=1.0,
        rescale_type="HU",
        window_center="40\\400",
        window_width="400\\1500",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        pixel_data_location=None,
        thumbnail_location=None,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        image_status="ACTIVE",
        space_size=524_288 + n,
        created_time=created,
        updated_time=updated,
    )
    fields.update(changes)
    return DicomImageMeta(**fields)


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def store(database: DatabaseSettings) -> Iterator[PgStore]:
    """A migrated store on the test's own database."""
    s = PgStore(database)
    s.migrate()
    yield s
    s.close()


def query(db: DatabaseSettings, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        return conn.execute(text.encode(), params).fetchall()


def table_rows(db: DatabaseSettings, table: str) -> list[tuple[Any, ...]]:
    """Every row, ordered, with xmin: a rewritten row shows a new xmin even with equal values."""
    with psycopg.connect(db.conninfo(), autocommit=True) as conn:
        stmt = sql.SQL("SELECT xmin::text, t.* FROM {} AS t ORDER BY 2, 3, 4, 5").format(sql.Identifier(table))
        return conn.execute(stmt).fetchall()


def counts(db: DatabaseSettings) -> dict[str, int]:
    return {
        t: query(db, f"SELECT count(*) FROM {t}")[0][0]
        for t in ("dicom_object_meta", "dicom_state_meta", "dicom_image_meta")
    }


def stored_state(db: DatabaseSettings, series: int) -> DicomStateMeta:
    fields = ", ".join(DicomStateMeta.__struct_fields__)
    with psycopg.connect(db.conninfo(), autocommit=True, row_factory=kwargs_row(DicomStateMeta)) as conn:
        row = conn.execute(
            f"SELECT {fields} FROM dicom_state_meta WHERE tenant_id = %s AND study_uid = %s AND series_uid = %s".encode(),
            (TENANT, STUDY, series_uid(series)),
        ).fetchone()
    assert row is not None
    return row


# --------------------------------------------------------------------------- schema


TABLE_OF: dict[type[msgspec.Struct], tuple[str, tuple[str, ...]]] = {
    DicomStoreMeta: ("dicom_object_meta", ("trace_id",)),
    DicomStateMeta: ("dicom_state_meta", ("tenant_id", "study_uid", "series_uid")),
    DicomImageMeta: ("dicom_image_meta", ("tenant_id", "study_uid", "series_uid", "sop_uid")),
}
#: Literal (enumerated) str fields per model.
LITERALS: dict[type[msgspec.Struct], set[str]] = {
    m: {f.name for f in mi.type_info(m).fields if isinstance(f.type, mi.LiteralType)}  # type: ignore[attr-defined]
    for m in TABLE_OF
}
#: Fields the wire format declares int64 (everything else int is int32).
INT64_FIELDS = {"file_size", "space_size"}
#: str fields whose limit is not a byte limit in ``_limits``: trace_id is a 36-character UUID.
FIXED_STR = {"trace_id": 36}
#: Columns that are not wire-format fields, on purpose: (data_type, varchar length, nullable).
#: transfer_reason: why the image workers could not transcode a NeedTransfer instance (migration 0003).
NOT_ON_THE_WIRE: dict[str, dict[str, tuple[str, int | None, bool]]] = {
    "dicom_object_meta": {"transfer_reason": ("character varying", 1024, True)},
}


def expected_columns(model: type[msgspec.Struct]) -> dict[str, tuple[str, int | None, bool]]:
    """column -> (data_type, varchar length, nullable), from the model's field types alone.

    A Literal's length is the longest value: the column must hold at least that.
    """
    limits = dict(model._limits)
    info = mi.type_info(model)
    assert isinstance(info, mi.StructType)
    expected: dict[str, tuple[str, int | None, bool]] = {}
    for f in info.fields:
        tp, nullable = f.type, False
        if isinstance(tp, mi.UnionType):
            rest = [t for t in tp.types if not isinstance(t, mi.NoneType)]
            assert len(rest) == 1, f"{f.name}: unexpected union {tp}"
            tp, nullable = rest[0], True
        length: int | None = None
        if isinstance(tp, mi.StrType):
            pg_type, length = "character varying", FIXED_STR.get(f.name) or limits[f.name]
        elif isinstance(tp, mi.LiteralType):
            pg_type, length = "character varying", max(len(str(v)) for v in tp.values)
        elif isinstance(tp, mi.IntType):
            pg_type = "bigint" if f.name in INT64_FIELDS else "integer"
        elif isinstance(tp, mi.FloatType):
            pg_type = "double precision"
        elif isinstance(tp, mi.DateTimeType):
            pg_type = "timestamp without time zone"
        elif isinstance(tp, mi.DateType):
            pg_type = "date"
        elif isinstance(tp, mi.TimeType):
            pg_type = "time without time zone"
        else:
            raise AssertionError(f"{model.__name__}.{f.name}: no column type known for {tp}")
        expected[f.name] = (pg_type, length, nullable)
    return expected


@pytest.mark.parametrize("model", list(TABLE_OF), ids=lambda m: m.__name__)
def test_schema_has_one_column_per_model_field(store: PgStore, database: DatabaseSettings, model: type[msgspec.Struct]) -> None:
    table, key = TABLE_OF[model]
    rows = query(
        database,
        "SELECT column_name, data_type, character_maximum_length, is_nullable = 'YES' "
        "FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    actual = {name: (data_type, length, nullable) for name, data_type, length, nullable in rows}
    expected = expected_columns(model)
    for name, (pg_type, length, nullable) in expected.items():
        assert name in actual, f"{table} has no column for {model.__name__}.{name}"
        a_type, a_length, a_nullable = actual[name]
        assert a_type == pg_type, f"{table}.{name}: {a_type}, model says {pg_type}"
        if pg_type == "character varying":
            assert a_length is not None and length is not None
            if name in LITERALS[model]:
                assert a_length >= length, f"{table}.{name}: varchar({a_length}) cannot hold every value"
            else:
                assert a_length == length, f"{table}.{name}: varchar({a_length}), model limit {length}"
        assert a_nullable == nullable, f"{table}.{name}: nullable={a_nullable}, model says {nullable}"
    extra = NOT_ON_THE_WIRE.get(table, {})
    assert {name: actual[name] for name in extra if name in actual} == extra, f"{table}: columns outside the wire format"
    assert set(actual) == set(expected) | set(extra), (
        f"{table} has columns no model field fills: {set(actual) - set(expected) - set(extra)}")
    pk = query(
        database,
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (table,),
    )
    assert tuple(r[0] for r in pk) == key


def test_state_table_has_the_dicomweb_lookup_indexes(store: PgStore, database: DatabaseSettings) -> None:
    rows = query(
        database,
        "SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey, a.attnum)) "
        "FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'dicom_state_meta'::regclass GROUP BY i.indexrelid",
    )
    leading = {tuple(r[0][:2]) for r in rows}
    for wanted in (("tenant_id", "patient_id"), ("tenant_id", "study_date"), ("tenant_id", "accession_number")):
        assert wanted in leading, f"no index on dicom_state_meta{wanted}"


def test_transfer_status_outside_the_wire_values_is_refused(store: PgStore, database: DatabaseSettings) -> None:
    # The model cannot hold such a value (decoding refuses it); the CHECK guards other writers.
    payload = models.encode(receipt(1, 1)).replace(b'"NoNeedTransfer"', b'"Lost"')
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "INSERT INTO dicom_object_meta SELECT * FROM json_populate_record(NULL::dicom_object_meta, %s::json)",
                (payload.decode(),),
            )
        conn.execute(
            "INSERT INTO dicom_object_meta SELECT * FROM json_populate_record(NULL::dicom_object_meta, %s::json)",
            (models.encode(receipt(1, 1)).decode(),),
        )
    assert counts(database)["dicom_object_meta"] == 1


# --------------------------------------------------------------------------- migrations


def test_migrations_apply_once_and_rerun_harmlessly(database: DatabaseSettings) -> None:
    versions = [m.version for m in available_migrations()]
    assert versions and versions == sorted(versions)
    with PgStore(database) as s:
        assert s.migrate() == versions
        assert s.migrate() == []
    with PgStore(database) as other:
        assert other.migrate() == []
        status = other.status()
    assert [m.version for m in status.applied] == versions
    assert status.pending == []
    assert not any(m.modified for m in status.applied)
    assert query(database, "SELECT count(*) FROM schema_migrations") == [(len(versions),)]


def test_concurrent_migrations_do_not_collide(database: DatabaseSettings) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        with PgStore(database) as s:
            barrier.wait()
            try:
                results.append(s.migrate())
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sorted(results, key=len) == [[], [], [m.version for m in available_migrations()]]


def test_a_later_migration_reaches_a_store_already_writing(
    store: PgStore, database: DatabaseSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After migrate() applies something, the store's session state follows the new tables."""
    store.write_batch([], [state(1)], [image(1, 1)])
    shipped = migrations.available_migrations()
    widen = migrations.Migration("9999", "wider_status", "ALTER TABLE dicom_image_meta ALTER COLUMN image_status TYPE varchar(48);")
    monkeypatch.setattr(migrations, "available_migrations", lambda: [*shipped, widen])

    assert store.migrate() == ["9999"]
    wide = image(1, 2)
    wide.image_status = "S" * 40  # fits the migrated column, not the old one
    (result,) = store.write_batch([], [state(1)], [wide])
    assert result.series_related_instances == 2
    assert query(database, "SELECT max(length(image_status)) FROM dicom_image_meta") == [(40,)]

    # Another process migrates while this store keeps its session.
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE dicom_image_meta ALTER COLUMN image_status TYPE varchar(64)")
    wider = image(1, 3)
    wider.image_status = "S" * 60
    (result,) = store.write_batch([], [state(1)], [wider])
    assert result.series_related_instances == 3


def test_write_before_migrate_names_the_fix(database: DatabaseSettings) -> None:
    with PgStore(database) as s, pytest.raises(StoreError, match="db migrate") as info:
        s.write_batch([receipt(1, 1)], [], [])
    assert not is_poison(info.value)


def test_a_schema_older_than_the_models_is_reported_not_poison(store: PgStore, database: DatabaseSettings) -> None:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE dicom_image_meta DROP COLUMN thumbnail_location")
    with PgStore(database) as fresh, pytest.raises(StoreError, match=r"thumbnail_location.*db migrate") as info:
        fresh.write_batch([], [state(1)], [image(1, 1)])
    assert not is_poison(info.value)


# --------------------------------------------------------------------------- upserts


def test_batch_is_written_and_states_come_back_persisted(store: PgStore, database: DatabaseSettings) -> None:
    receipts = [receipt(s, n) for s in (1, 2) for n in range(3)]
    states = [state(2), state(1)]
    images = [image(s, n) for s in (2, 1) for n in range(3)]
    result = store.write_batch(receipts, states, images)

    assert [r.series_uid for r in result] == [series_uid(1), series_uid(2)]
    assert [r.series_related_instances for r in result] == [3, 3]
    expected = msgspec.structs.replace(state(1), series_related_instances=3)
    assert result[0] == expected
    assert stored_state(database, 1) == expected
    assert counts(database) == {"dicom_object_meta": 6, "dicom_state_meta": 2, "dicom_image_meta": 6}
    # Values survive the round trip exactly (floats, times with microseconds, backslashes, NULLs).
    fields = ", ".join(DicomImageMeta.__struct_fields__)
    with psycopg.connect(database.conninfo(), row_factory=kwargs_row(DicomImageMeta)) as conn:
        back = conn.execute(f"SELECT {fields} FROM dicom_image_meta ORDER BY series_uid, sop_uid".encode()).fetchall()
    assert back == sorted(images, key=lambda i: (i.series_uid, i.sop_uid))
    with psycopg.connect(database.conninfo(), row_factory=kwargs_row(DicomStoreMeta)) as conn:
        back_r = conn.execute(
            f"SELECT {', '.join(DicomStoreMeta.__struct_fields__)} FROM dicom_object_meta".encode()
        ).fetchall()
    assert sorted(back_r, key=lambda r: r.trace_id) == sorted(receipts, key=lambda r: r.trace_id)


def test_replaying_a_batch_changes_nothing(store: PgStore, database: DatabaseSettings) -> None:
    receipts = [receipt(s, n) for s in (1, 2, 3) for n in range(4)]
    states = [state(s) for s in (1, 2, 3)]
    images = [image(s, n) for s in (1, 2, 3) for n in range(4)]
    first = store.write_batch(receipts, states, images)
    before = {t: table_rows(database, t) for t in ("dicom_object_meta", "dicom_state_meta", "dicom_image_meta")}

    again = store.write_batch(receipts, states, images)
    shuffled = receipts[:]
    random.Random(7).shuffle(shuffled)
    store.write_batch(shuffled[:5], states[::-1], images[::-1])

    assert again == first
    after = {t: table_rows(database, t) for t in before}
    assert after == before  # same values and same xmin: no row was even rewritten
    assert [s.series_related_instances for s in first] == [4, 4, 4]


def test_duplicate_keys_in_one_batch_are_merged_last_wins(store: PgStore, database: DatabaseSettings) -> None:
    trace = str(uuid.uuid4())
    later = T0 + dt.timedelta(minutes=5)
    receipts = [receipt(1, 1, trace_id=trace), receipt(1, 1, trace_id=trace, when=later)]
    states = [
        state(1, created=T0, updated=T0, series_description="first"),
        state(1, created=later, updated=later, series_description="second"),
    ]
    images = [image(1, 1, instance_number=10), image(1, 2), image(1, 1, instance_number=11)]

    (result,) = store.write_batch(receipts, states, images)

    assert query(database, "SELECT trace_id, created_time FROM dicom_object_meta") == [(trace, later)]
    assert query(database, "SELECT sop_uid, instance_number FROM dicom_image_meta ORDER BY sop_uid") == [
        (sop_uid(1, 1), 11), (sop_uid(1, 2), 2),
    ]
    assert result.series_description == "second"
    assert result.created_time == T0  # the first one seen: the series was created then
    assert result.updated_time == later
    assert result.series_related_instances == 2


def test_series_count_follows_the_instance_rows_across_batches(store: PgStore, database: DatabaseSettings) -> None:
    (r1,) = store.write_batch([], [state(1)], [image(1, n) for n in range(3)])
    assert r1.series_related_instances == 3

    # New instances plus one replayed one.
    (r2,) = store.write_batch([], [state(1)], [image(1, n) for n in range(2, 6)])
    assert r2.series_related_instances == 6

    # Instances only: the existing state row is touched and returned.
    (r3,) = store.write_batch([], [], [image(1, 6), image(1, 7)])
    assert r3.series_related_instances == 8

    # Instances of a series without a state row yet: nothing to return ...
    assert store.write_batch([], [], [image(2, n) for n in range(4)]) == []
    # ... and its state arrives later, counting the instances already there.
    (r4,) = store.write_batch([], [state(2)], [])
    assert r4.series_related_instances == 4

    # A state message carrying a wrong count does not win against the rows.
    (r5,) = store.write_batch([], [state(1, series_related_instances=1)], [])
    assert r5.series_related_instances == 8
    assert query(
        database,
        "SELECT series_uid, series_related_instances FROM dicom_state_meta ORDER BY series_uid",
    ) == [(series_uid(1), 8), (series_uid(2), 4)]


def test_created_time_is_kept_and_updated_time_refreshed(store: PgStore, database: DatabaseSettings) -> None:
    t1, t2 = T0, T0 + dt.timedelta(hours=1)
    store.write_batch([], [state(1, created=t1, updated=t1)], [image(1, 1, created=t1, updated=t1)])

    (after,) = store.write_batch(
        [], [state(1, created=t2, updated=t2, series_description="RECON 2")],
        [image(1, 1, created=t2, updated=t2, window_center="50")],
    )
    assert (after.created_time, after.updated_time, after.series_description) == (t1, t2, "RECON 2")
    assert query(database, "SELECT created_time, updated_time, window_center FROM dicom_image_meta") == [(t1, t2, "50")]

    # Replaying the older message refreshes the attributes but never moves updated_time back.
    (replayed,) = store.write_batch([], [state(1, created=t1, updated=t1, series_description="AXIAL 1")], [])
    assert (replayed.created_time, replayed.updated_time, replayed.series_description) == (t1, t2, "AXIAL 1")


def test_states_come_back_in_key_order(store: PgStore) -> None:
    order = [7, 3, 11, 1, 5]
    result = store.write_batch([], [state(s) for s in order], [image(s, 1) for s in reversed(order)])
    keys = [(r.tenant_id, r.study_uid, r.series_uid) for r in result]
    assert keys == sorted(keys)
    assert len(keys) == len(order)


def test_empty_batch_does_no_io(database: DatabaseSettings) -> None:
    s = PgStore(database)  # not migrated: any statement would fail
    assert s.write_batch([], [], []) == []
    assert s.backend_pid() is None


def test_nul_characters_are_removed_not_fatal(store: PgStore, database: DatabaseSettings) -> None:
    (result,) = store.write_batch([receipt(1, 1)], [state(1, patient_name="Doe^Jane\x00")], [image(1, 1, image_type="ORIGINAL\x00")])
    assert result.patient_name == "Doe^Jane"
    assert query(database, "SELECT image_type FROM dicom_image_meta") == [("ORIGINAL",)]


@pytest.mark.parametrize(
    ("change", "sqlstate"),
    [
        ({"instance_number": 2**40}, "22003"),  # IS allows 12 digits; integer does not (refused by the server)
        ({"instance_number": -(2**31) - 1}, "22003"),
        ({"space_size": 2**70}, None),  # beyond bigint: refused by the encoder
        ({"slice_thickness": "thick"}, None),  # a wrong type from a careless caller
        ({"image_status": "X" * 40}, "22001"),  # over the varchar limit
    ],
    ids=["int32-overflow", "int32-underflow", "int64-overflow", "wrong-type", "too-long"],
)
def test_a_refused_value_is_poison_names_its_record_and_writes_nothing(
    store: PgStore, database: DatabaseSettings, change: dict[str, Any], sqlstate: str | None
) -> None:
    bad = image(1, 3)
    for name, value in change.items():
        setattr(bad, name, value)  # bypasses the model's truncation, like a careless caller
    with pytest.raises(StoreDataError) as info:
        store.write_batch([receipt(1, 1)], [state(1)], [image(1, 1), image(1, 2), bad, image(1, 4)])
    assert is_poison(info.value)
    assert info.value.table == "dicom_image_meta"
    assert info.value.record == bad
    assert info.value.sqlstate == sqlstate
    assert counts(database) == {"dicom_object_meta": 0, "dicom_state_meta": 0, "dicom_image_meta": 0}
    # The store stays usable.
    (ok,) = store.write_batch([receipt(1, 1)], [state(1)], [image(1, 1)])
    assert ok.series_related_instances == 1


def test_text_that_cannot_be_encoded_is_poison(store: PgStore) -> None:
    bad = state(1, patient_name="Doe\udc80")  # a lone surrogate: not encodable as UTF-8
    with pytest.raises(StoreDataError) as info:
        store.write_batch([], [bad], [])
    assert info.value.record == bad
    assert store.write_batch([], [state(1)], [image(1, 1)])[0].series_related_instances == 1


# --------------------------------------------------------------------------- concurrency


def test_concurrent_writers_on_overlapping_series_end_with_exact_counts(database: DatabaseSettings) -> None:
    """Two consumers, every batch touching every series, instances interleaved and shuffled."""
    with PgStore(database) as s:
        s.migrate()
    n_series, per_batch, batches = 6, 60, 12
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(worker: int) -> None:
        rng = random.Random(worker)
        with PgStore(database, max_attempts=2) as s:
            barrier.wait()
            try:
                for b in range(batches):
                    # Instance numbers overlap between the workers half of the time (replays).
                    base = (b * per_batch) + (worker * per_batch // 2)
                    imgs = [image(1 + i % n_series, base + i) for i in range(per_batch)]
                    rng.shuffle(imgs)
                    sts = [state(x, updated=T0 + dt.timedelta(seconds=b)) for x in range(1, n_series + 1)]
                    rng.shuffle(sts)
                    recs = [receipt(1 + i % n_series, base + i) for i in range(per_batch)]
                    s.write_batch(recs, sts, imgs)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors

    distinct = query(
        database,
        "SELECT series_uid, count(*) FROM dicom_image_meta GROUP BY series_uid ORDER BY series_uid",
    )
    stored = query(database, "SELECT series_uid, series_related_instances FROM dicom_state_meta ORDER BY series_uid")
    assert stored == distinct
    total = 2 * batches * per_batch
    expected_sops = len({b * per_batch + w * per_batch // 2 + i for w in (0, 1) for b in range(batches) for i in range(per_batch)})
    assert sum(c for _, c in distinct) == expected_sops < total
    assert query(database, "SELECT count(*) FROM dicom_object_meta") == [(total,)]


def test_a_writer_counts_after_a_concurrent_writer_of_the_same_series_commits(database: DatabaseSettings) -> None:
    """The race the series lock exists for, made deterministic.

    Writer B (a raw connection following the store's protocol: series lock,
    insert, recount) holds its transaction open while the store writes other
    instances of the same series. Without the lock each would count the
    other's rows out and the last commit would leave a count too low.
    """
    with PgStore(database) as store:
        store.migrate()
        store.write_batch([], [state(1)], [image(1, 1)])
        pid = store.backend_pid()
        b = psycopg.connect(database.conninfo())
        try:
            b.execute("SELECT pg_advisory_xact_lock(%s)", (_series_lock_key(1),))
            b.execute(
                "INSERT INTO dicom_image_meta SELECT * FROM json_populate_record(NULL::dicom_image_meta, %s::json)",
                (models.encode(image(1, 2)).decode(),),
            )
            b.execute(
                "UPDATE dicom_state_meta SET series_related_instances = "
                "(SELECT count(*) FROM dicom_image_meta WHERE series_uid = %s) WHERE series_uid = %s",
                (series_uid(1), series_uid(1)),
            )
            outcome: list[list[DicomStateMeta]] = []
            t = threading.Thread(target=lambda: outcome.append(store.write_batch([], [], [image(1, 3), image(1, 4)])))
            t.start()
            deadline = time.monotonic() + 10
            while t.is_alive() and not query(
                database, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (pid,)
            ):
                assert time.monotonic() < deadline
                time.sleep(0.02)
            b.commit()
            t.join(30)
        finally:
            b.close()
    assert [s.series_related_instances for s in outcome[0]] == [4]
    assert query(database, "SELECT series_related_instances FROM dicom_state_meta") == [(4,)]


# --------------------------------------------------------------------------- faults


def terminate(stack: LocalStack, pid: int) -> None:
    """Kill one backend the way a server shutdown does, and wait until it is gone."""
    with psycopg.connect(stack.postgres.admin_conninfo(), autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + 10
        while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, "backend did not exit"
            time.sleep(0.05)


def test_reconnects_after_the_backend_is_terminated(stack: LocalStack, store: PgStore, database: DatabaseSettings) -> None:
    store.write_batch([receipt(1, 1)], [state(1)], [image(1, 1)])
    old_pid = store.backend_pid()
    assert old_pid is not None
    terminate(stack, old_pid)

    (result,) = store.write_batch([receipt(1, 2)], [state(1)], [image(1, 2)])

    assert result.series_related_instances == 2
    assert store.backend_pid() not in (None, old_pid)
    assert counts(database) == {"dicom_object_meta": 2, "dicom_state_meta": 1, "dicom_image_meta": 2}


def test_unreachable_database_is_transient_and_the_next_call_recovers(stack: LocalStack, database: DatabaseSettings) -> None:
    """The database appears only after a failed call: the store recovers without being rebuilt."""
    late = dataclasses.replace(database, dbname=f"{database.dbname}_late")
    admin = stack.postgres.admin_conninfo()
    s = PgStore(late)
    try:
        with pytest.raises(StoreError) as info:
            s.write_batch([receipt(1, 1)], [state(1)], [image(1, 1)])
        assert not is_poison(info.value)
        assert late.dbname in str(info.value)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(late.dbname), sql.Identifier(late.user)))
        s.migrate()
        (result,) = s.write_batch([receipt(1, 1)], [state(1)], [image(1, 1)])
        assert result.series_related_instances == 1
    finally:
        s.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(late.dbname)))


def test_connection_lost_inside_the_transaction_is_retried_on_a_new_one(
    stack: LocalStack, store: PgStore, database: DatabaseSettings
) -> None:
    """The backend dies while the batch waits for a series lock held elsewhere."""
    store.write_batch([], [state(1)], [image(1, 1)])
    victim = store.backend_pid()
    assert victim is not None
    holder = psycopg.connect(database.conninfo())
    try:
        # Take the series lock of series 1 the way a concurrent writer would.
        holder.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k", ([_series_lock_key(1)],))
        outcome: list[Any] = []
        t = threading.Thread(target=lambda: outcome.append(store.write_batch([], [], [image(1, 2)])))
        t.start()
        deadline = time.monotonic() + 10
        while not query(database, "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'", (victim,)):
            assert time.monotonic() < deadline, "the batch never waited for the lock"
            time.sleep(0.05)
        terminate(stack, victim)
        holder.rollback()  # release the lock: the retry on the new connection proceeds
        t.join(30)
    finally:
        holder.close()
    assert [r.series_related_instances for r in outcome[0]] == [2]
    assert store.backend_pid() != victim


def _series_lock_key(series: int) -> int:
    return series_lock_key(TENANT, STUDY, series_uid(series))


# --------------------------------------------------------------------------- CLI


def test_db_commands(stack: LocalStack, database: DatabaseSettings, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomflow.cli import app

    monkeypatch.chdir(tmp_path)  # no ./dicomflow.toml from elsewhere
    env = {
        "DICOMFLOW_DATABASE_HOST": database.host,
        "DICOMFLOW_DATABASE_PORT": str(database.port),
        "DICOMFLOW_DATABASE_DBNAME": database.dbname,
        "DICOMFLOW_DATABASE_USER": database.user,
        "DICOMFLOW_DATABASE_PASSWORD": database.password,
    }
    runner = CliRunner()
    pending = runner.invoke(app, ["db", "status"], env=env)
    assert pending.exit_code == 3, pending.output
    assert "pending  0001" in pending.output and "missing" in pending.output

    first = runner.invoke(app, ["db", "migrate"], env=env)
    assert first.exit_code == 0, first.output
    assert "applied 0001" in first.output
    second = runner.invoke(app, ["db", "migrate"], env=env)
    assert second.exit_code == 0 and "up to date" in second.output

    with PgStore(database) as s:
        s.write_batch([receipt(1, n) for n in range(3)], [state(1)], [image(1, n) for n in range(3)])
    shown = runner.invoke(app, ["db", "status"], env=env)
    assert shown.exit_code == 0, shown.output
    assert "applied  0001_initial" in shown.output
    lines = {line.split()[0]: line.split()[1] for line in shown.output.splitlines() if line.startswith("dicom_")}
    assert lines == {"dicom_object_meta": "3", "dicom_state_meta": "1", "dicom_image_meta": "3"}
    as_json = runner.invoke(app, ["db", "status", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    status = json.loads(as_json.stdout)
    assert set(status) == {"database", "applied", "pending", "counts", "counts_exact"}
    assert status["counts"] == {"dicom_object_meta": 3, "dicom_state_meta": 1, "dicom_image_meta": 3}
    assert status["pending"] == [] and status["counts_exact"] is True
    assert {"version", "name", "applied_at", "modified"} <= set(status["applied"][0])

    broken = runner.invoke(app, ["db", "migrate"], env={**env, "DICOMFLOW_DATABASE_PORT": "1"})
    assert broken.exit_code == 1 and "db migrate failed" in broken.output
