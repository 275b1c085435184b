"""One topic's messages of a batch → its warehouse Arrow table, fast, with the model's exact results.

Why not decode into the models: their ``__post_init__`` (byte limits, the
trace_id length, int ranges, naive datetimes) runs in Python for every
message and was about half of the sink's CPU time. Instead each table gets a
*lean* :class:`msgspec.Struct` generated from its model (:func:`lean_struct`):
the same fields, types and defaults, no ``__post_init__``, and the model's
checks expressed as msgspec constraints that msgspec checks in C while it
decodes (naive datetimes, trace_id length, the int32/int64 range of each
integer column). Byte limits, which the model enforces by *truncating*, are
checked column-wise on the Arrow table (``binary_length``), not per value.

The results are those of the model path, message for message:

- the lean struct accepts a subset of what the model accepts (every
  constraint is at least as strict as the model's);
- a message it refuses, or a row with a string over its byte limit, takes the
  model's path: :func:`dicomflow.models.decode` (which truncates, or raises
  the :class:`~dicomflow.errors.WireFormatError` whose text becomes the
  dead-letter reason), then the row-by-row Arrow conversion, which names a
  value that does not fit its column.

Audit events (nested, few) are decoded with their model directly: it has no
``__post_init__`` to skip.
"""

from __future__ import annotations

import datetime as dt
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from dicomflow.errors import WireFormatError
from dicomflow.models import AuditEvent, decode
from dicomflow.warehouse.arrow import to_arrow
from dicomflow.warehouse.schema import FIXED_BYTES, Column, Table

_INT_RANGE: dict[str, tuple[int, int]] = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
#: What the Arrow conversion can refuse (an int beyond its column type ...): such a message is poison.
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError)


def _constrained(annotation: Any, column: Column, fixed_len: int | None) -> Any:
    """``annotation`` with the model's __post_init__ checks as msgspec constraints (kept under ``| None``)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _constrained(inner[0], column, fixed_len) | None
        return annotation
    if annotation is dt.datetime:
        return Annotated[dt.datetime, msgspec.Meta(tz=False)]
    if annotation is int and column.wire_type in _INT_RANGE:
        lo, hi = _INT_RANGE[column.wire_type]
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if annotation is str and fixed_len is not None:
        return Annotated[str, msgspec.Meta(min_length=fixed_len, max_length=fixed_len)]
    return annotation


def lean_struct(t: Table) -> type[msgspec.Struct]:
    """A Struct with the fields of ``t.model`` in wire order, without ``__post_init__``.

    ``gc=False``: its values are strings, numbers and dates, never containers,
    so the garbage collector need not track (and repeatedly scan) them.
    """
    model = t.model
    hints = typing.get_type_hints(model)
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for f in info.fields:
        fixed = FIXED_BYTES.get((model.__name__, f.name))
        annotation = _constrained(hints[f.name], t.column(f.name), fixed)
        if f.required:
            fields.append((f.name, annotation))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, annotation, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, annotation, f.default))
    return msgspec.defstruct(f"Lean{model.__name__}", fields, kw_only=True, gc=False)


@dataclass
class Decoded:
    """A table's rows of a batch (column ``_seq`` = position in the batch) and the messages refused."""

    rows: pa.Table
    #: (position in the batch, reason) of each message that does not fit the table.
    poison: list[tuple[int, str]]
    #: Messages that took the model's path (refused by the lean struct, or truncated): for metrics and tests.
    slow: int = 0


class TableDecoder:
    """Decodes batches of one table's messages (see the module docstring)."""

    def __init__(self, t: Table) -> None:
        self.table = t
        self._lean: type[msgspec.Struct] = t.model if t.model is AuditEvent else lean_struct(t)
        self._decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(self._lean)
        #: (column index, byte limit) of the strings whose limit the model enforces by truncating.
        limits = dict(getattr(t.model, "_limits", ()))
        self._limited = [(i, limits[c.name]) for i, c in enumerate(t.columns) if c.name in limits]

    def decode(self, items: Sequence[tuple[int, bytes]]) -> Decoded:
        """Decode ``items`` ((position in batch, message value) pairs) into one Arrow table."""
        dec = self._decoder.decode
        fast: list[Any] = []
        fast_seq: list[int] = []
        slow: list[tuple[int, bytes]] = []
        for seq, value in items:
            try:
                fast.append(dec(value))
            except (msgspec.ValidationError, msgspec.DecodeError, ValueError, TypeError, OverflowError,
                    UnicodeError, RecursionError):
                slow.append((seq, value))
                continue
            fast_seq.append(seq)
        try:
            rows = to_arrow(self.table, fast, fast_seq)
        except ARROW_ERRORS:  # not expected with the range constraints; the model's path finds the culprit
            taken = set(fast_seq)
            slow.extend((s, v) for s, v in items if s in taken)
            rows = to_arrow(self.table, [], [])
        rows, truncated = self._over_limit(rows, items)
        slow.extend(truncated)
        if not slow:
            return Decoded(rows, [])
        slow_rows, poison = self._model_path(slow)
        return Decoded(pa.concat_tables([rows, slow_rows]), poison, len(slow))

    def _over_limit(self, rows: pa.Table, items: Sequence[tuple[int, bytes]]) -> tuple[pa.Table, list[tuple[int, bytes]]]:
        """Split off the rows with a string over its byte limit (rare): the model truncates those."""
        mask: pa.Array | None = None
        for i, limit in self._limited:
            lengths = pc.binary_length(rows.column(i))
            biggest = pc.max(lengths).as_py()
            if biggest is None or biggest <= limit:
                continue
            over = pc.fill_null(pc.greater(lengths, limit), False)
            mask = over if mask is None else pc.or_(mask, over)
        if mask is None:
            return rows, []
        flagged = set(rows.column("_seq").filter(mask).to_pylist())
        by_seq = dict(items)
        return rows.filter(pc.invert(mask)), [(s, by_seq[s]) for s in sorted(flagged)]

    def _model_path(self, slow: list[tuple[int, bytes]]) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Decode with the model itself and convert row by row: the reference behaviour, reasons included."""
        t = self.table
        poison: list[tuple[int, str]] = []
        good: list[msgspec.Struct] = []
        good_seq: list[int] = []
        for seq, value in slow:
            try:
                m = decode(value, t.model)
            except WireFormatError as exc:
                poison.append((seq, str(exc)))
                continue
            try:
                to_arrow(t, [m], [seq])
            except ARROW_ERRORS as exc:
                poison.append((seq, f"a value does not fit table {t.name}: {exc}"))
                continue
            good.append(m)
            good_seq.append(seq)
        return to_arrow(t, good, good_seq), poison


__all__ = ["ARROW_ERRORS", "Decoded", "TableDecoder", "lean_struct"]
