"""The change log against the real PostgreSQL: the consumer's batches write create / update rows in their transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.settings import DatabaseSettings, Settings, to_child_env
from dicomflow.store import PgStore
from tests.integration.store.test_store import T0, TENANT, image, query, receipt, state


@pytest.fixture
def store(database: DatabaseSettings) -> Iterator[PgStore]:
    s = PgStore(database)
    s.migrate()
    yield s
    s.close()


def change_rows(db: DatabaseSettings) -> list[tuple[object, ...]]:
    return query(db, "SELECT sequence, tenant_id, sop_uid, action, state FROM dicom_change_log ORDER BY sequence")


def test_a_batch_writes_one_create_per_new_instance_in_key_order(store: PgStore, database: DatabaseSettings) -> None:
    store.write_batch([receipt(1, n) for n in (2, 1)], [state(1)], [image(1, 2), image(1, 1)])
    rows = change_rows(database)
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (TENANT, image(1, 1).sop_uid, "create", "current"), (TENANT, image(1, 2).sop_uid, "create", "current")]
    assert rows[0][0] < rows[1][0]


def test_a_replayed_batch_records_nothing(store: PgStore, database: DatabaseSettings) -> None:
    batch = ([receipt(1, 1)], [state(1)], [image(1, 1)])
    store.write_batch(*batch)
    store.write_batch(*batch)
    assert len(change_rows(database)) == 1


def test_a_replaced_instance_is_an_update_and_its_create_is_replaced(store: PgStore, database: DatabaseSettings) -> None:
    store.write_batch([receipt(1, 1)], [state(1)], [image(1, 1)])
    later = T0.replace(hour=9)
    store.write_batch([receipt(1, 1, when=later)], [state(1, updated=later)],
                      [image(1, 1, updated=later, window_center="50")])
    rows = change_rows(database)
    assert [(r[3], r[4]) for r in rows] == [("create", "replaced"), ("update", "current")]
    assert rows[0][0] < rows[1][0]


def test_a_failed_batch_writes_no_change_rows(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import StoreDataError

    with pytest.raises(StoreDataError):
        store.write_batch([receipt(1, 1)], [state(1)], [image(1, 1), image(1, 2, width=2**40)])
    assert change_rows(database) == []


# --------------------------------------------------------------------------- deletes in the store

def _stored(store: PgStore) -> None:
    """Series 1 and 2 with two instances each, series 3 with one."""
    store.write_batch([receipt(s, n) for s in (1, 2) for n in (1, 2)] + [receipt(3, 1)],
                      [state(1), state(2), state(3)],
                      [image(s, n) for s in (1, 2) for n in (1, 2)] + [image(3, 1)])


def test_a_series_delete_removes_its_rows_and_logs_deletes(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import DeleteTarget

    _stored(store)
    gone = image(2, 1).series_uid
    result = store.delete(DeleteTarget(TENANT, image(2, 1).study_uid, gone), purge_delay_s=0)
    assert [i.sop_uid for i in result.instances] == [image(2, 1).sop_uid, image(2, 2).sop_uid]
    assert result.emptied_series == [gone]
    for table in ("dicom_image_meta", "dicom_object_meta", "dicom_state_meta"):
        assert query(database, f"SELECT count(*) FROM {table} WHERE series_uid = %s", (gone,)) == [(0,)]
    rows = change_rows(database)
    assert [r[3] for r in rows] == ["create"] * 5 + ["delete"] * 2
    assert [r[4] for r in rows if r[2].startswith(gone + ".")] == ["deleted"] * 4
    assert all(r[4] == "current" for r in rows if not r[2].startswith(gone + "."))
    purge = query(database, "SELECT sequence, sop_uid, locations FROM dicom_purge_queue ORDER BY sequence")
    assert [p[0] for p in purge] == [i.sequence for i in result.instances]
    assert purge[0][2] == [receipt(2, 1).file_path]


def test_an_instance_delete_recounts_its_series(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import DeleteTarget

    _stored(store)
    one = image(1, 1)
    result = store.delete(DeleteTarget(TENANT, one.study_uid, one.series_uid, one.sop_uid))
    assert [i.sop_uid for i in result.instances] == [one.sop_uid]
    assert result.emptied_series == []
    assert [s.series_related_instances for s in result.remaining_states] == [1]


def test_a_delete_in_another_tenant_finds_nothing(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import DeleteTarget

    _stored(store)
    result = store.delete(DeleteTarget("other-tenant", image(1, 1).study_uid))
    assert not result.found
    assert query(database, "SELECT count(*) FROM dicom_image_meta") == [(5,)]
    assert [r[3] for r in change_rows(database)] == ["create"] * 5


def test_a_restored_instance_is_a_new_create_with_a_higher_sequence(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import DeleteTarget

    _stored(store)
    one = image(3, 1)
    store.delete(DeleteTarget(TENANT, one.study_uid, one.series_uid, one.sop_uid))
    store.write_batch([receipt(3, 1)], [state(3)], [image(3, 1)])
    rows = [r for r in change_rows(database) if r[2] == one.sop_uid]
    assert [(r[3], r[4]) for r in rows] == [("create", "deleted"), ("delete", "deleted"), ("create", "current")]
    assert rows[0][0] < rows[1][0] < rows[2][0]
    assert query(database, "SELECT series_related_instances FROM dicom_state_meta WHERE series_uid = %s",
                 (one.series_uid,)) == [(1,)]


# --------------------------------------------------------------------------- dicomflow delete


def test_the_delete_command_asks_deletes_and_audits(settings: Settings, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from dicomflow.cli import app
    from dicomflow.kafka.admin import create_topics, delete_topics
    from tests.integration.ingest_support import read_audit

    monkeypatch.chdir(tmp_path)
    settings = dataclasses.replace(settings, storage=dataclasses.replace(settings.storage, default_tenant=TENANT))
    create_topics(settings.kafka, settings.topics)
    try:
        with PgStore(settings.database) as store:
            store.migrate()
            _stored(store)
        env = to_child_env(settings, {})
        runner = CliRunner()
        one = image(1, 1)
        args = ["delete", "--study", one.study_uid, "--series", one.series_uid]
        declined = runner.invoke(app, args, env=env, input="n\n")
        assert declined.exit_code == 1, declined.output
        assert query(settings.database, "SELECT count(*) FROM dicom_image_meta") == [(5,)]
        elsewhere = runner.invoke(app, [*args, "--tenant", "other-tenant", "--yes"], env=env)
        assert elsewhere.exit_code == 4, elsewhere.output
        assert runner.invoke(app, ["delete", "--study", one.study_uid, "--instance", one.sop_uid], env=env).exit_code == 2
        done = runner.invoke(app, args, env=env, input="y\n")
        assert done.exit_code == 0, done.output
        assert "2 instances" in done.output
        assert query(settings.database, "SELECT count(*) FROM dicom_image_meta") == [(3,)]
        audit = [a for a in read_audit(settings) if a.event_action == "D"]
        assert [(a.tenant_id, a.participant_objects[0].object_id) for a in audit] == [(TENANT, one.study_uid)]
        undone = runner.invoke(app, ["undelete", "--study", one.study_uid, "--series", one.series_uid], env=env)
        assert undone.exit_code == 0, undone.output
        assert "2 instances" in undone.output
        assert query(settings.database, "SELECT count(*) FROM dicom_image_meta") == [(5,)]
        restores = [a for a in read_audit(settings) if a.event_id.code == "110103" and a.event_action == "C"]
        assert [(a.tenant_id, a.participant_objects[0].object_id, a.participant_objects[0].details["resource"])
                for a in restores] == [(TENANT, one.study_uid, f"/studies/{one.study_uid}/series/{one.series_uid}")]
        again = runner.invoke(app, ["undelete", "--study", one.study_uid, "--series", one.series_uid], env=env)
        assert again.exit_code == 4, again.output
    finally:
        delete_topics(settings.kafka, settings.topics.all())


def test_undelete_puts_back_what_the_purge_has_not_taken(store: PgStore, database: DatabaseSettings) -> None:
    from dicomflow.store import DeleteTarget

    _stored(store)
    before = {t: sorted(query(database, f"SELECT * FROM {t}"), key=str) for t in ("dicom_image_meta", "dicom_object_meta")}
    states = query(database, "SELECT * FROM dicom_state_meta ORDER BY series_uid")
    series = image(2, 1).series_uid
    store.delete(DeleteTarget(TENANT, image(2, 1).study_uid, series), purge_delay_s=3600)
    restored = store.undelete(DeleteTarget(TENANT, image(2, 1).study_uid, series))
    assert restored == [image(2, 1).sop_uid, image(2, 2).sop_uid]
    for table, rows in before.items():
        assert sorted(query(database, f"SELECT * FROM {table}"), key=str) == rows, table
    assert query(database, "SELECT * FROM dicom_state_meta ORDER BY series_uid") == states
    assert query(database, "SELECT count(*) FROM dicom_purge_queue") == [(0,)]
    rows = [r for r in change_rows(database) if r[2].startswith(series + ".")]
    assert [(r[3], r[4]) for r in rows] == [("create", "deleted")] * 2 + [("delete", "deleted")] * 2 + [
        ("create", "current")] * 2
    assert store.undelete(DeleteTarget(TENANT, image(2, 1).study_uid, series)) == []  # once
