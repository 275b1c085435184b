"""Batch preparation for the PostgreSQL store: rows from records, before any I/O.

What :meth:`~dicomflow.store.postgres.PgStore.write_batch` does to its input
before it opens a transaction: merge rows with the same primary key (last one
wins, in input order; PostgreSQL refuses an ``INSERT ... ON CONFLICT`` that
touches one row twice), sort them by key, remove NUL characters that
PostgreSQL text cannot hold, and compute the series advisory-lock keys.
Pure logic: nothing here talks to the server.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, TypeVar

import msgspec

from dicomflow.models import DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.store.sql import IMAGES, RECEIPTS, SERIES_KEY, STATES, Table

log = logging.getLogger(__name__)

R = TypeVar("R", bound=msgspec.Struct)


def series_lock_key(tenant_id: str, study_uid: str, series_uid: str) -> int:
    """The transaction advisory-lock key of one series: a stable signed 64-bit integer.

    Part of the write protocol: anything else that writes instance rows or
    series_related_instances must hold ``pg_advisory_xact_lock(key)`` for
    each series it touches, taken in ascending key order.

    Derived from the state table's primary key (not the patient), so two
    messages that disagree on the patient still lock the same row's series.
    A collision between two series costs only some waiting.
    """
    raw = "\x00".join((tenant_id, study_uid, series_uid)).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big", signed=True)


def strip_nul(records: Sequence[R]) -> Sequence[R]:
    """Remove NUL characters, which PostgreSQL text cannot hold.

    DICOM pads UIDs with NUL bytes; a decoder that forgets to strip them, or
    a crafted message, would otherwise make the whole batch fail forever.
    Checked on the JSON encoding first (fast, in C); rebuilt only when found.
    Text that cannot be encoded at all (a lone surrogate) is left for the
    COPY to refuse, naming its record.
    """
    if not records:
        return records
    try:
        if b"\\u0000" not in msgspec.json.encode(records):
            return records
    except UnicodeEncodeError:
        pass
    cleaned: list[R] = []
    changed = False
    for record in records:
        changes = {
            name: value.replace("\x00", "")
            for name in record.__struct_fields__
            if isinstance(value := getattr(record, name), str) and "\x00" in value
        }
        if changes:
            log.warning(
                "removed NUL characters from %s of %s %s",
                ", ".join(changes), type(record).__name__, identify(record),
            )
            record = msgspec.structs.replace(record, **changes)
            changed = True
        cleaned.append(record)
    return cleaned if changed else records


def identify(record: msgspec.Struct) -> str:
    """The UID that names a record in logs: trace id, SOP Instance UID or Series UID (never PHI)."""
    for name in ("trace_id", "sop_uid", "series_uid"):
        value = getattr(record, name, None)
        if isinstance(value, str):
            return value
    return "?"


def merge(table: Table[R], records: Sequence[R]) -> list[R]:
    """One record per primary key, the last one in input order, sorted by key."""
    key_of = table.key_of()
    merged: dict[tuple[str, ...], R] = {}
    for record in records:
        merged[key_of(record)] = record
    return [merged[k] for k in sorted(merged)]


def merge_states(records: Sequence[DicomStateMeta]) -> list[DicomStateMeta]:
    """Like :func:`merge`, but the merged row keeps the first created_time seen."""
    key_of = STATES.key_of()
    first_created: dict[tuple[str, ...], Any] = {}
    merged: dict[tuple[str, ...], DicomStateMeta] = {}
    for record in records:
        key = key_of(record)
        first_created.setdefault(key, record.created_time)
        merged[key] = record
    result = []
    for key in sorted(merged):
        record = merged[key]
        if record.created_time != first_created[key]:
            record = msgspec.structs.replace(record, created_time=first_created[key])
        result.append(record)
    return result


@dataclass(frozen=True)
class Batch:
    """A batch ready to write: merged, sorted, cleaned; its series and their locks."""

    receipts: list[DicomStoreMeta]
    states: list[DicomStateMeta]
    images: list[DicomImageMeta]
    #: Series whose state rows are returned: those of states and images.
    series: list[tuple[str, str, str]]
    #: Advisory lock keys of every series the batch writes, ascending.
    locks: list[int]

    @classmethod
    def prepare(
        cls,
        receipts: Sequence[DicomStoreMeta],
        states: Sequence[DicomStateMeta],
        images: Sequence[DicomImageMeta],
    ) -> Batch:
        # Merge first (states repeat per instance), then clean what is left;
        # removing a NUL can make two keys equal, so merge again if it did.
        merged_receipts = merge(RECEIPTS, receipts)
        merged_states = merge_states(states)
        merged_images = merge(IMAGES, images)
        if (cleaned_r := strip_nul(merged_receipts)) is not merged_receipts:
            merged_receipts = merge(RECEIPTS, cleaned_r)
        if (cleaned_s := strip_nul(merged_states)) is not merged_states:
            merged_states = merge_states(cleaned_s)
        if (cleaned_i := strip_nul(merged_images)) is not merged_images:
            merged_images = merge(IMAGES, cleaned_i)
        series_of = attrgetter(*SERIES_KEY)
        touched: set[tuple[str, str, str]] = {series_of(s) for s in merged_states}
        touched.update(series_of(i) for i in merged_images)
        locked = touched | {series_of(r) for r in merged_receipts}
        return cls(
            receipts=merged_receipts,
            states=merged_states,
            images=merged_images,
            series=sorted(touched),
            locks=sorted({series_lock_key(*s) for s in locked}),
        )

    @property
    def empty(self) -> bool:
        return not (self.receipts or self.states or self.images)



__all__ = ["Batch", "identify", "merge", "merge_states", "series_lock_key", "strip_nul"]
