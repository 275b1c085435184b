"""Sink metadata: columns the warehouse sink takes from the Kafka message, not from its payload.

``instances.indexed_time`` is when the instance was indexed: the timestamp of
its ``dicom_image_queue`` message. The consumer publishes that message only
after PostgreSQL committed the instance (docs/architecture.md, "Delivery
guarantees"), and the producer stamps it then (``CreateTime``; a topic set to
``LogAppendTime`` gives the broker's time of arrival, a few milliseconds later).
The wire payload cannot say it: the consumer stamps the row's ``updated_time``
with the store event's ``created_time``, so that a replay writes identical
rows.

Kafka timestamps are milliseconds since the epoch; the wire datetimes are
naive local times of the host that made them, so ``indexed_time`` is stored as
the sink host's naive local time too. The ingest latency of the report
(``indexed_time - receipts.created_time``) therefore assumes the receiver and
the sink run in the same time zone. A message without a timestamp leaves the
column null (the report skips it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pyarrow as pa
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Message

from dicomflow.warehouse.arrow import ARROW_TYPES
from dicomflow.warehouse.schema import INDEXED_TIME_COLUMN, Table


def indexed_time(message: Message) -> dt.datetime | None:
    """The message's Kafka timestamp as a naive local datetime (None when the message has none)."""
    kind, ms = message.timestamp()
    if kind == TIMESTAMP_NOT_AVAILABLE or ms is None or ms < 0:
        return None
    return dt.datetime.fromtimestamp(ms / 1000.0)


def with_metadata(t: Table, rows: pa.Table, records: Sequence[Message]) -> pa.Table:
    """``rows`` (a decoded batch of ``t``, column ``_seq`` indexing ``records``) with ``t``'s metadata columns added."""
    for c in t.metadata:
        if c.name != INDEXED_TIME_COLUMN:
            raise ValueError(f"table {t.name}: no source for sink metadata column {c.name!r}")
        values = [indexed_time(records[s]) for s in rows.column("_seq").to_pylist()]
        rows = rows.append_column(pa.field(c.name, ARROW_TYPES[c.wire_type]), pa.array(values, ARROW_TYPES[c.wire_type]))
    return rows


__all__ = ["indexed_time", "with_metadata"]
