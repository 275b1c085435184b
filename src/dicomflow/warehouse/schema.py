"""The warehouse tables, derived from the one wire-format model (:mod:`dicomflow.models`).

Nothing here lists a column by hand: every column comes from a field of a
:class:`msgspec.Struct` (its name, its type, whether it may be null, its byte
limit from the model's ``_limits``), so a field added to a message reaches the
DuckDB sink, the ClickHouse DDL and the Doris DDL at once, or fails a test.

Two facts the Python types cannot express are taken from the wire format (the
Rust reference services' messages, docs/architecture.md "Topics") and kept in
one small table each:

- integers are ``int32`` except the 64-bit ones (:data:`INT64_FIELDS`:
  ``file_size``, ``space_size``);
- ``trace_id`` is a 36-character UUID (the model checks its length).

Audit events are nested structures: their scalar top-level fields become
columns, the nested parts (``event_id``, ``event_type``, ``active_participants``,
``participant_objects``) stay whole as ``json`` columns, and a leading
``event_key`` column (md5 hex of the event's wire JSON, see
:func:`audit_event_key`) deduplicates re-published events.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta

WireType = Literal["str", "date", "time", "datetime", "int32", "int64", "float", "bool", "json"]
TableKind = Literal["append", "latest"]

#: (model name, field) of the 64-bit integers of the wire format; every other int is int32.
INT64_FIELDS: frozenset[tuple[str, str]] = frozenset(
    {("DicomStoreMeta", "file_size"), ("DicomImageMeta", "space_size")}
)
#: Fixed-length strings the model checks by length rather than truncating.
FIXED_BYTES: dict[tuple[str, str], int] = {("DicomStoreMeta", "trace_id"): 36}

#: Name of the audit table's key column (not a wire field: a content hash).
AUDIT_KEY_COLUMN = "event_key"
#: Sink metadata of ``instances`` (not a wire field): when the consumer published the
#: instance message, i.e. when the instance was indexed (the consumer publishes only
#: after PostgreSQL committed). See :mod:`dicomflow.warehouse.metadata`.
INDEXED_TIME_COLUMN = "indexed_time"


@dataclass(frozen=True)
class Column:
    """One warehouse column: a wire field and how engines should type it."""

    name: str
    wire_type: WireType
    nullable: bool
    #: Byte limit of a string (``varchar(N)``); None when unbounded or not a string.
    max_bytes: int | None


@dataclass(frozen=True)
class Table:
    """One warehouse table fed by one topic."""

    name: str
    #: Attribute of :class:`~dicomflow.settings.TopicSettings` naming the source topic.
    topic_attr: str
    model: type[msgspec.Struct]
    #: ``append``: one row per event, deduplicated by key; ``latest``: one row per key,
    #: the highest ``version_column`` wins (Doris UNIQUE KEY / ReplacingMergeTree).
    kind: TableKind
    key: tuple[str, ...]
    version_column: str | None
    partition_column: str | None
    columns: tuple[Column, ...]
    #: Columns the sink adds from the Kafka message itself (not wire fields, not in
    #: the message models; :mod:`dicomflow.warehouse.metadata`), stored after ``columns``.
    metadata: tuple[Column, ...] = ()

    def column(self, name: str) -> Column:
        """The column called ``name``.

        Raises:
            KeyError: no such column in this table.
        """
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name} has no column {name!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in table order (the columns decoded from the message)."""
        return tuple(c.name for c in self.columns)

    @property
    def stored_columns(self) -> tuple[Column, ...]:
        """Every column of the stored table: the decoded ones, then the sink metadata."""
        return self.columns + self.metadata

    @property
    def stored_column_names(self) -> tuple[str, ...]:
        """Names of :attr:`stored_columns`."""
        return tuple(c.name for c in self.stored_columns)

    @property
    def wire_fields(self) -> tuple[str, ...]:
        """The columns that are fields of the message (all but a derived key)."""
        derived = {AUDIT_KEY_COLUMN} if self.model is AuditEvent else set()
        return tuple(c.name for c in self.columns if c.name not in derived)


def _scalar_type(model: str, field: str, t: msgspec.inspect.Type) -> WireType:
    """Wire type of one (non-null) msgspec type."""
    ins = msgspec.inspect
    if isinstance(t, ins.StrType):
        return "str"
    if isinstance(t, ins.BoolType):
        return "bool"
    if isinstance(t, ins.IntType):
        return "int64" if (model, field) in INT64_FIELDS else "int32"
    if isinstance(t, ins.FloatType):
        return "float"
    if isinstance(t, ins.DateTimeType):
        return "datetime"
    if isinstance(t, ins.DateType):
        return "date"
    if isinstance(t, ins.TimeType):
        return "time"
    if isinstance(t, ins.LiteralType):
        values = t.values
        if all(isinstance(v, str) for v in values):
            return "str"
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return "int64" if (model, field) in INT64_FIELDS else "int32"
    if isinstance(t, (ins.StructType, ins.ListType, ins.DictType)):
        return "json"
    raise TypeError(f"{model}.{field}: no warehouse type for {t!r}")


def _field_column(model: type[msgspec.Struct], f: msgspec.inspect.Field) -> Column:
    t = f.type
    nullable = False
    if isinstance(t, msgspec.inspect.UnionType):
        others = [u for u in t.types if not isinstance(u, msgspec.inspect.NoneType)]
        nullable = len(others) < len(t.types)
        if len(others) != 1:
            raise TypeError(f"{model.__name__}.{f.name}: unions other than `T | None` have no warehouse type")
        t = others[0]
    wire = _scalar_type(model.__name__, f.name, t)
    limits: dict[str, int] = dict(getattr(model, "_limits", ()))
    max_bytes = limits.get(f.name, FIXED_BYTES.get((model.__name__, f.name))) if wire == "str" else None
    return Column(f.name, wire, nullable, max_bytes)


def columns_of(model: type[msgspec.Struct]) -> tuple[Column, ...]:
    """One column per field of ``model``, in wire order."""
    info = msgspec.inspect.type_info(model)
    assert isinstance(info, msgspec.inspect.StructType)
    return tuple(_field_column(model, f) for f in info.fields)


def audit_event_key(payload: bytes | AuditEvent) -> str:
    """The audit table key: md5 hex of the event's canonical wire JSON.

    The event is re-encoded from its decoded form (field order fixed by the
    model), so the same event published twice, even with different
    whitespace, has the same key; two events differing in anything do not.
    """
    event = payload if isinstance(payload, AuditEvent) else msgspec.json.decode(payload, type=AuditEvent)
    return hashlib.md5(msgspec.json.encode(event), usedforsecurity=False).hexdigest()


def _table(name: str, topic_attr: str, model: type[msgspec.Struct], kind: TableKind,
           key: tuple[str, ...], extra: tuple[Column, ...] = (), metadata: tuple[Column, ...] = ()) -> Table:
    columns = extra + columns_of(model)
    names = {c.name for c in columns}
    for k in key:
        if k not in names:
            raise TypeError(f"table {name}: key column {k!r} is not a field of {model.__name__}")
    version = "updated_time" if kind == "latest" else None
    if version is not None and version not in names:
        raise TypeError(f"table {name}: {model.__name__} has no {version} to order versions by")
    partition = "study_date" if "study_date" in names else None
    return Table(name, topic_attr, model, kind, key, version, partition, columns, metadata)


#: The four tables, in the order the DDL creates them.
TABLES: tuple[Table, ...] = (
    # log_queue: the receipt record (Doris DUPLICATE KEY), one row per trace_id.
    _table("receipts", "log", DicomStoreMeta, "append", ("trace_id",)),
    # Keys as the reference's Doris UNIQUE KEY (and the Kafka message keys: md5 of the same parts).
    _table("series_states", "dicom_state", DicomStateMeta, "latest",
           ("tenant_id", "patient_id", "study_uid", "series_uid")),
    _table("instances", "dicom_image", DicomImageMeta, "latest",
           ("tenant_id", "patient_id", "study_uid", "series_uid", "sop_uid"),
           metadata=(Column(INDEXED_TIME_COLUMN, "datetime", True, None),)),
    _table("audit_events", "audit", AuditEvent, "append", (AUDIT_KEY_COLUMN,),
           extra=(Column(AUDIT_KEY_COLUMN, "str", False, 32),)),
)

_BY_NAME: dict[str, Table] = {t.name: t for t in TABLES}


def table(name: str) -> Table:
    """The table called ``name``.

    Raises:
        KeyError: naming the known tables.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no warehouse table {name!r}; known: {', '.join(_BY_NAME)}") from None


def table_for_topic_attr(topic_attr: str) -> Table:
    """The table fed by the topic named by ``TopicSettings.<topic_attr>``."""
    for t in TABLES:
        if t.topic_attr == topic_attr:
            return t
    raise KeyError(f"no warehouse table for topic {topic_attr!r}")


def describe() -> list[dict[str, Any]]:
    """The schema as plain data (for ``--json`` outputs and docs)."""
    return [
        {
            "name": t.name, "topic": t.topic_attr, "kind": t.kind, "key": list(t.key),
            "version_column": t.version_column, "partition_column": t.partition_column,
            "columns": [c.__dict__ for c in t.columns],
            "metadata": [c.__dict__ for c in t.metadata],
        }
        for t in TABLES
    ]


__all__ = [
    "AUDIT_KEY_COLUMN",
    "INDEXED_TIME_COLUMN",
    "INT64_FIELDS",
    "TABLES",
    "Column",
    "Table",
    "WireType",
    "audit_event_key",
    "columns_of",
    "describe",
    "table",
    "table_for_topic_attr",
]
