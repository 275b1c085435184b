"""What the lifecycle worker reads and writes in PostgreSQL: the change outbox and the purge queue.

Synchronous psycopg, each function one statement on the caller's
connection and transaction; values bound.

- outbox: ``dicom_change_outbox`` holds, per publisher name, the last
  change-log sequence published. :func:`claim_position` locks the row
  (``FOR UPDATE``: two publishers of one name take turns, so neither
  publishes out of order), :func:`changes_after` reads on from it, and
  :func:`advance` moves it once Kafka acknowledged. Rows are visible in
  sequence order (the change-log lock, :mod:`~dicomflow.store.changes`),
  so reading past the position misses nothing.
- purge queue: ``dicom_purge_queue`` rows a delete left; :func:`due_purges`
  locks the due ones (``SKIP LOCKED``: several workers share the queue),
  :func:`forget_purges` removes them once their objects are gone.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import kwargs_row

from dicomflow.models import DicomStateMeta
from dicomflow.store.sql import READ_STATES


@dataclass(frozen=True)
class ChangeRow:
    """One change-log row, as the change event carries it."""

    sequence: int
    tenant_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    action: str
    state: str
    timestamp: dt.datetime


@dataclass(frozen=True)
class PurgeItem:
    """One deleted instance whose objects are still to be removed."""

    sequence: int
    tenant_id: str
    study_uid: str
    series_uid: str
    sop_uid: str
    locations: list[str]
    #: The deleted instance row as wire-format JSON (None for a receipt without an instance row).
    image: str | None
    #: The last state row of a series this delete emptied, on one row of that series.
    series_state: str | None


def claim_position(conn: psycopg.Connection[Any], publisher: str) -> int:
    """The publisher's last published sequence (0 at first), its row locked to the transaction's end."""
    conn.execute("INSERT INTO dicom_change_outbox (publisher, sequence) VALUES (%s, 0) ON CONFLICT DO NOTHING",
                 (publisher,))
    row = conn.execute("SELECT sequence FROM dicom_change_outbox WHERE publisher = %s FOR UPDATE",
                       (publisher,)).fetchone()
    return int(row[0]) if row else 0


def changes_after(conn: psycopg.Connection[Any], sequence: int, limit: int) -> list[ChangeRow]:
    """Change-log rows past ``sequence``, in sequence order, at most ``limit``."""
    rows = conn.execute(
        "SELECT sequence, tenant_id, study_uid, series_uid, sop_uid, action, state, timestamp FROM dicom_change_log "
        "WHERE sequence > %s ORDER BY sequence LIMIT %s", (sequence, limit)).fetchall()
    return [ChangeRow(*r) for r in rows]


def advance(conn: psycopg.Connection[Any], publisher: str, sequence: int) -> None:
    conn.execute("UPDATE dicom_change_outbox SET sequence = %s, updated_at = now() WHERE publisher = %s",
                 (sequence, publisher))


def due_purges(conn: psycopg.Connection[Any], limit: int) -> list[PurgeItem]:
    """Purge-queue rows whose delay has passed, oldest first, locked (others' locked rows skipped)."""
    rows = conn.execute(
        "SELECT sequence, tenant_id, study_uid, series_uid, sop_uid, locations, image::text, series_state::text "
        "FROM dicom_purge_queue WHERE not_before <= now() ORDER BY sequence LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,)).fetchall()
    return [PurgeItem(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), list(r[5]), r[6], r[7]) for r in rows]


def states_of(conn: psycopg.Connection[Any], series: Sequence[tuple[str, str, str]]) -> list[DicomStateMeta]:
    """The state rows of those series that still exist (the series a purge touched, recounted by their delete)."""
    if not series:
        return []
    columns = [list(c) for c in zip(*series, strict=True)]
    with conn.cursor(row_factory=kwargs_row(DicomStateMeta)) as cur:
        return cur.execute(READ_STATES, columns).fetchall()


def forget_purges(conn: psycopg.Connection[Any], sequences: Sequence[int]) -> None:
    conn.execute("DELETE FROM dicom_purge_queue WHERE sequence = ANY(%s::bigint[])", (list(sequences),))


def pending_purges(conn: psycopg.Connection[Any]) -> int:
    """Rows still queued, due or not (``dicomflow purge`` reports them)."""
    row = conn.execute("SELECT count(*) FROM dicom_purge_queue").fetchone()
    return int(row[0]) if row else 0


__all__ = ["ChangeRow", "PurgeItem", "advance", "changes_after", "claim_position", "due_purges", "forget_purges",
           "pending_purges", "states_of"]
