"""Poison isolation: when PostgreSQL refuses a batch, find the record(s) it refuses.

Rare path (a value the extractor let through but PostgreSQL refuses, such as
an integer beyond its range): each good item is persisted alone, through the
same :func:`~dicomflow.pipeline.commit.persist` step and the store's public
``write_batch``, one transaction per item; those the store refuses as poison
become dead letters (``database-rejected``). The caller then retries the
batch as a whole, which rewrites the accepted items harmlessly (upserts).
"""

from __future__ import annotations

import logging

from dicomflow.errors import StoreError, is_poison
from dicomflow.pipeline.commit import BatchStore, Progress, persist
from dicomflow.pipeline.types import Parsed, ParsedBatch, Poison

log = logging.getLogger(__name__)

#: DLQ error class for a record PostgreSQL refuses (a value out of range ...).
DATABASE_REJECTED = "database-rejected"


def isolate_rejected(parsed: ParsedBatch, store: BatchStore) -> int:
    """Persist the good items one by one; turn those the store refuses into dead letters in ``parsed``.

    Returns:
        How many items became dead letters (0: no single item is refused,
        so the failure was not about one record).

    Raises:
        StoreError: a transient store failure (propagated: the caller backs off).
    """
    rejected = 0
    for index, item in enumerate(parsed.items):
        if not isinstance(item, Parsed):
            continue
        try:
            persist(ParsedBatch([item], parsed.started), Progress(), store)
        except StoreError as exc:
            if not is_poison(exc):
                raise
            log.error("%s: PostgreSQL refused SOP Instance %s: %s", item.record.source, item.event.sop_uid, exc)
            parsed.items[index] = Poison(item.record, DATABASE_REJECTED, str(exc), item.event)
            rejected += 1
    return rejected


__all__ = ["DATABASE_REJECTED", "isolate_rejected"]
