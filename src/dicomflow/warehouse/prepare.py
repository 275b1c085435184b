"""One batch of the warehouse sink, decoded: Arrow-ready rows per table, dead letters, next offsets.

Pure (no Kafka call, no DuckDB call): :func:`decode_batch` turns the
messages the consumer returned into one :class:`~dicomflow.warehouse.duck.TableBatch`
per table and the :class:`~dicomflow.kafka.dlq.Poison` of every message that
does not fit its table's model; the sink (:mod:`dicomflow.warehouse.sink`)
dead-letters those and writes the rest with the batch's next offsets.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import Message

from dicomflow.kafka.dlq import Poison
from dicomflow.kafka.records import TP, record_of
from dicomflow.warehouse.decoding import TableDecoder
from dicomflow.warehouse.duck import TableBatch
from dicomflow.warehouse.metadata import with_metadata
from dicomflow.warehouse.schema import Table

WIRE_FORMAT = "wire-format"


@dataclass
class Prepared:
    """A decoded batch, ready for its DuckDB transaction once its dead letters are acknowledged."""

    #: The batch's messages as the client gave them (not copied into Records: the hot path reads four fields).
    records: list[Message]
    tables: list[TableBatch]
    next_offsets: dict[TP, int]
    poison: list[Poison]
    started: float


def decode_batch(messages: list[Message], stored: Mapping[TP, int], tables: Mapping[str, Table],
                 decoders: Mapping[str, TableDecoder]) -> Prepared:
    """Decode ``messages`` (skipping offsets already in the file, ``stored``) into tables and poison.

    ``tables`` maps each topic to its table, ``decoders`` each table name to its decoder.
    """
    started = time.monotonic()
    items: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
    poison: list[Poison] = []
    next_offsets: dict[TP, int] = {}
    records: list[Message] = []
    for m in messages:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        assert topic is not None and partition is not None and offset is not None  # error-free messages
        tp = (topic, partition)
        if offset < stored.get(tp, -1):
            continue  # already in the file (defensive: the seek makes this rare)
        if next_offsets.get(tp, -1) <= offset:
            next_offsets[tp] = offset + 1
        seq = len(records)
        records.append(m)
        value = m.value()
        if value is None:
            poison.append(Poison(record_of(m), WIRE_FORMAT,
                                 f"empty message (no value) where a {tables[topic].model.__name__} was expected"))
            continue
        items[tables[topic].name].append((seq, value))
    batches: list[TableBatch] = []
    for name, table_items in items.items():
        decoded = decoders[name].decode(table_items)
        t = decoders[name].table
        batches.append(TableBatch(t, with_metadata(t, decoded.rows, records) if t.metadata else decoded.rows))
        poison.extend(Poison(record_of(records[seq]), WIRE_FORMAT, reason) for seq, reason in decoded.poison)
    return Prepared(records, batches, next_offsets, poison, started)


__all__ = ["WIRE_FORMAT", "Prepared", "decode_batch"]
