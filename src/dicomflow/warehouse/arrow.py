"""Decoded wire messages → one Arrow table per warehouse table (the sink's bulk path).

Each message is decoded and validated with msgspec against its table's model
(:func:`dicomflow.models.decode`), then the batch is turned column-wise into a
:class:`pyarrow.Table` whose types follow the schema. DuckDB reads the Arrow
table in place (zero copy) for ``INSERT ... SELECT``: no per-row SQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
import pyarrow as pa

from dicomflow.models import AuditEvent
from dicomflow.warehouse.schema import AUDIT_KEY_COLUMN, Table, WireType, audit_event_key

#: Arrow type of each wire type (JSON travels as text; DuckDB casts it to its JSON type).
ARROW_TYPES: dict[WireType, pa.DataType] = {
    "str": pa.string(),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "datetime": pa.timestamp("us"),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "json": pa.string(),
}

_json = msgspec.json.Encoder()


def arrow_schema(t: Table) -> pa.Schema:
    """The Arrow schema of ``t``'s batches: its columns, then ``_seq`` (position in the batch)."""
    fields = [pa.field(c.name, ARROW_TYPES[c.wire_type], nullable=c.nullable) for c in t.columns]
    return pa.schema([*fields, pa.field("_seq", pa.int64(), nullable=False)])


def to_arrow(t: Table, messages: Sequence[msgspec.Struct], seq: Sequence[int]) -> pa.Table:
    """One Arrow table holding ``messages`` (decoded models of ``t``), ``seq`` giving their batch order.

    Raises:
        pyarrow.ArrowInvalid: a value does not fit its column type (an int
            beyond int32 ...): the caller dead-letters such messages one by one.
    """
    schema = arrow_schema(t)
    if not messages:
        return schema.empty_table()
    if t.model is not AuditEvent and not any(c.wire_type == "json" for c in t.columns):
        # Flat rows: one struct array built from the row tuples in C++ (no Python transposition).
        row_type = pa.struct([schema.field(i) for i in range(len(t.columns))])
        rows = pa.array([msgspec.structs.astuple(m) for m in messages], type=row_type)
        flat = pa.Table.from_struct_array(rows).append_column("_seq", pa.array(seq, pa.int64()))
        return flat.cast(schema)
    return _by_columns(t, schema, messages, seq)


def _by_columns(t: Table, schema: pa.Schema, messages: Sequence[msgspec.Struct], seq: Sequence[int]) -> pa.Table:
    """Column by column, for tables with JSON columns (their values are encoded first)."""
    rows = [msgspec.structs.astuple(m) for m in messages]
    wire_columns: list[Any] = list(zip(*rows, strict=True))
    arrays: list[pa.Array] = []
    offset = 0
    if t.model is AuditEvent:
        arrays.append(pa.array([audit_event_key(m) for m in messages], pa.string()))  # type: ignore[arg-type]
        offset = 1
    for i, values in enumerate(wire_columns):
        col = t.columns[i + offset]
        if col.wire_type == "json":
            values = [None if v is None else _json.encode(v).decode("utf-8") for v in values]
        arrays.append(pa.array(values, ARROW_TYPES[col.wire_type]))
    arrays.append(pa.array(seq, pa.int64()))
    return pa.Table.from_arrays(arrays, schema=schema)


__all__ = ["ARROW_TYPES", "AUDIT_KEY_COLUMN", "arrow_schema", "to_arrow"]
