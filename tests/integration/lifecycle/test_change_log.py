"""The change log against the real PostgreSQL: the consumer's batches write create / update rows in their transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dicomflow.settings import DatabaseSettings
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
