"""Poison isolation: the record PostgreSQL refuses becomes a dead letter, the others are persisted alone."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from dicomflow.errors import StoreError
from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.pipeline.isolate import DATABASE_REJECTED, isolate_rejected
from dicomflow.pipeline.types import Parsed, ParsedBatch, Poison
from dicomflow.store import StoreDataError
from tests.unit.pipeline.test_commit import make_parsed


class Store:
    """Refuses batches holding one of ``refused`` (SOP Instance UIDs); fails transiently while ``down``."""

    def __init__(self, refused: set[str], down: bool = False) -> None:
        self.refused = refused
        self.down = down
        self.written: list[list[str]] = []

    def write_batch(
        self, receipts: Sequence[DicomStoreMeta], states: Sequence[DicomStateMeta], images: Sequence[DicomImageMeta]
    ) -> list[DicomStateMeta]:
        if self.down:
            raise StoreError("connection refused")
        sops = [i.sop_uid for i in images]
        if self.refused & set(sops):
            raise StoreDataError("integer out of range", sqlstate="22003")
        self.written.append(sops)
        return list(states)


@pytest.fixture
def batch(tmp_path: Path) -> ParsedBatch:
    return make_parsed(tmp_path)


def good_sops(batch: ParsedBatch) -> list[str]:
    return [i.event.sop_uid for i in batch.items if isinstance(i, Parsed)]


def test_the_refused_record_becomes_a_dead_letter_in_place_and_the_rest_is_written_one_by_one(batch: ParsedBatch) -> None:
    sops = good_sops(batch)
    store = Store({sops[1]})
    assert isolate_rejected(batch, store) == 1
    assert store.written == [[sops[0]], [sops[2]]]
    rejected = batch.items[1]
    assert isinstance(rejected, Poison) and rejected.error_class == DATABASE_REJECTED
    assert "integer out of range" in rejected.reason and rejected.event is not None
    assert rejected.event.sop_uid == sops[1]  # the audit event still names the instance
    assert len(batch.items) == 4 and len(batch.poison) == 2  # order and offsets kept


def test_when_no_single_record_is_refused_nothing_changes(batch: ParsedBatch) -> None:
    before = list(batch.items)
    assert isolate_rejected(batch, Store(set())) == 0
    assert batch.items == before


def test_a_transient_failure_is_raised_for_the_loop_to_back_off(batch: ParsedBatch) -> None:
    with pytest.raises(StoreError) as caught:
        isolate_rejected(batch, Store(set(), down=True))
    assert not isinstance(caught.value, StoreDataError)
    assert batch.poison and len(batch.poison) == 1  # nothing turned into a dead letter
