"""The analytics warehouse's sections: ``[warehouse]`` (the DuckDB sink), ``[clickhouse]`` and ``[doris]`` (DDL targets).

Part of the schema (:mod:`.schema` holds them in :class:`~dicomflow.settings.schema.Settings`),
in a module of their own to keep the schema's file short; imports nothing of the stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WarehouseSettings:
    """The analytics warehouse: the embedded DuckDB sink (``dicomflow warehouse run``)."""

    #: The DuckDB file the sink writes (one writing process at a time).
    path: Path = Path(".dicomflow/warehouse.duckdb")
    #: The sink's own consumer group (its Kafka commits are informational:
    #: the offsets that count live in the DuckDB file).
    group_id: str = "dicomflow-warehouse"
    #: Seconds between read-only snapshots for readers (0 disables them).
    snapshot_interval_s: float = 10.0
    #: The snapshot file; empty means ``<path stem>.snapshot.duckdb`` beside ``path``.
    snapshot_path: str = ""
    batch_max_messages: int = 20000
    batch_max_ms: int = 1000
    #: DuckDB worker threads; 0 lets DuckDB decide (one per core).
    threads: int = 0

    def snapshot_file(self) -> Path:
        """Where readers find the latest consistent snapshot."""
        if self.snapshot_path:
            return Path(self.snapshot_path)
        return self.path.with_name(self.path.stem + ".snapshot.duckdb")


@dataclass(frozen=True)
class ClickHouseSettings:
    """ClickHouse as a warehouse: what ``warehouse ddl --target clickhouse`` generates."""

    #: Database the tables are created in.
    database: str = "dicomflow"
    #: Brokers as ClickHouse reaches them; empty means ``kafka.brokers``.
    brokers: str = ""
    #: Consumer groups are ``<group_prefix>_<object|state|image|audit>_group``
    #: (the reference's ``medical_object_group`` ...).
    group_prefix: str = "medical"
    #: Kafka-engine consumers per topic (at most the topic's partitions).
    num_consumers: int = 1
    #: Messages a block may skip as unparseable (current syntax only; 18.x
    #: lacks the setting, see the legacy notes in the DDL header).
    skip_broken_messages: int = 1000
    #: The HTTP interface ``dicomflow report --clickhouse`` reads by default.
    url: str = "http://127.0.0.1:18123"


@dataclass(frozen=True)
class DorisSettings:
    """Apache Doris as a warehouse: what ``warehouse ddl --target doris`` generates."""

    database: str = "dicomflow"
    #: Brokers as Doris reaches them; empty means ``kafka.brokers``.
    brokers: str = ""
    #: ``property.group.id`` of the routine loads: ``<group_prefix>_<object|state|image|audit>_group``.
    group_prefix: str = "medical"
    replication_num: int = 3
    buckets: int = 10
    #: Rows a routine load may reject per window before it pauses.
    max_error_number: int = 1000
    max_batch_interval_s: int = 10
    #: Monthly dynamic partitions pre-created back in time (study dates are
    #: historical: old studies arrive every day); older dates go to one catch-all partition.
    history_partitions: int = 480
    future_partitions: int = 3


__all__ = ["ClickHouseSettings", "DorisSettings", "WarehouseSettings"]
