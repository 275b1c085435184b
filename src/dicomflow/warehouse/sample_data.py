"""A bulk-generated DuckDB warehouse, for the report's benchmark and tests and for trying the report.

Rows are generated inside DuckDB (``INSERT ... SELECT`` over ``range(n)``), so
a million instances take seconds. The schema is the sink's own
(:func:`~dicomflow.warehouse.duck.open_writer`); every column the generator
does not set explicitly gets a plain value of its wire type, so a field added
to the model does not break it.

Shape: ``instances`` receipts and instance rows, 50 instances per series, 4
series per study, 3 tenants, 5 modalities, 4 sending AEs, ``seconds_apart`` apart
from 2025-03-01, ingest latency 40 ms to about 2 s; one dead letter per 1,000
instances over four error classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dicomflow.settings import WarehouseSettings
from dicomflow.warehouse.schema import Table, table

_DEFAULTS = {
    "str": "'x'", "time": "TIME '10:00:00'", "date": "DATE '2025-03-01'", "datetime": "TIMESTAMP '2025-03-01 00:00:00'",
    "int32": "1", "int64": "1", "float": "1.0", "bool": "true", "json": "'{}'",
}

_KEYS = {
    "tenant_id": "'tenant-' || CAST(i // 200 % 3 AS VARCHAR)",
    "patient_id": "'P' || CAST(i // 200 AS VARCHAR)",
    "study_uid": "'1.2.826.0.1.3680043.10.1137.' || CAST(i // 200 AS VARCHAR)",
    "series_uid": "'1.2.826.0.1.3680043.10.1137.' || CAST(i // 200 AS VARCHAR) || '.' || CAST(i // 50 AS VARCHAR)",
    "sop_uid": "'1.2.826.0.1.3680043.10.1137.' || CAST(i // 200 AS VARCHAR) || '.' || CAST(i // 50 AS VARCHAR)"
               " || '.' || CAST(i AS VARCHAR)",
    "study_date": "DATE '2025-03-01' - CAST(i // 200 % 400 AS INTEGER)",
}


def _created(seconds_apart: int) -> str:
    return f"TIMESTAMP '2025-03-01 00:00:00' + to_microseconds(CAST(i * {seconds_apart * 1_000_000} + 123456 AS BIGINT))"


def _select(t: Table, overrides: dict[str, str]) -> str:
    exprs = []
    for c in t.stored_columns:
        expr = overrides.get(c.name, _DEFAULTS[c.wire_type])
        exprs.append(f"{expr} AS \"{c.name}\"")
    return ", ".join(exprs)


def build_sample_warehouse(path: Path, instances: int, *, seconds_apart: int = 2, threads: int = 0) -> None:
    """Create (replacing) a warehouse file at ``path`` holding ``instances`` instances, ``seconds_apart`` apart."""
    from dicomflow.warehouse.duck import open_writer

    path.unlink(missing_ok=True)
    con = open_writer(dataclasses.replace(WarehouseSettings(), path=path, threads=threads))
    created = _created(seconds_apart)
    try:
        receipts_cols = {**_KEYS, "trace_id": "CAST(uuid() AS VARCHAR)", "created_time": created,
                         "file_size": "400000 + (i * 7919) % 300000", "source_ae": "'AE' || CAST(i % 4 AS VARCHAR)"}
        latency_us = "CAST(40000 + hash(i) % 2000000 AS BIGINT)"
        # As the consumer writes them: updated_time is the store event's time, indexed_time when it was indexed.
        instance_cols = {**_KEYS, "created_time": created, "updated_time": created,
                         "indexed_time": f"{created} + to_microseconds({latency_us})"}
        modality = "['CT', 'MR', 'CR', 'US', 'DX'][1 + (i // 50) % 5]"
        state_cols = {**_KEYS, "modality": modality, "series_related_instances": "50", "created_time": created,
                      "updated_time": created}
        classes = "['file-missing', 'wire-format', 'unreadable-dicom', 'uid-mismatch'][1 + (i % 7) % 4]"
        objects = ("'[{\"object_id\":\"x\",\"id_type\":{\"code\":\"110180\",\"scheme\":\"DCM\",\"meaning\":\"Study Instance UID\"},"
                   "\"details\":{\"error_class\":\"' || " + classes + " || '\"}}]'")
        audit_cols = {
            "event_key": "md5(CAST(i AS VARCHAR))",
            "event_id": "'{\"code\":\"110100\",\"scheme\":\"DCM\",\"meaning\":\"Application Activity\"}'",
            "event_type": "'[{\"code\":\"DLQ\",\"scheme\":\"99DICOMFLOW\",\"meaning\":\"Message Dead-Lettered\"}]'",
            "event_action": "'E'", "event_outcome": "8", "tenant_id": "'tenant-' || CAST(i % 3 AS VARCHAR)",
            "event_date_time": created, "participant_objects": objects, "active_participants": "'[]'",
        }
        series = max(1, (instances + 49) // 50)
        con.execute(f"INSERT INTO receipts SELECT {_select(table('receipts'), receipts_cols)} FROM range({instances}) t(i)")
        con.execute(f"INSERT INTO instances SELECT {_select(table('instances'), instance_cols)} FROM range({instances}) t(i)")
        con.execute(f"INSERT INTO series_states SELECT {_select(table('series_states'), state_cols)} "
                    f"FROM (SELECT r * 50 AS i FROM range({series}) t(r))")
        con.execute(f"INSERT INTO audit_events SELECT {_select(table('audit_events'), audit_cols)} "
                    f"FROM range({instances // 1000}) t(i)")
        con.execute("CHECKPOINT")
    finally:
        con.close()


__all__ = ["build_sample_warehouse"]
