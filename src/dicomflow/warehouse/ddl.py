"""``warehouse ddl``: the DDL for one target engine, dispatched to that engine's generator.

The ClickHouse and Doris generators live in their own modules
(:mod:`.ddl_clickhouse`, :mod:`.ddl_doris`); a target whose module is not
installed is reported as such, not as a traceback.
"""

from __future__ import annotations

import importlib
from typing import Literal

from dicomflow.errors import DicomflowError
from dicomflow.settings import Settings

Target = Literal["clickhouse", "doris", "duckdb"]
TARGETS: tuple[Target, ...] = ("clickhouse", "doris", "duckdb")


class WarehouseError(DicomflowError):
    """The warehouse cannot do what was asked (file locked, target unknown, ...)."""


def _generator(module: str, function: str, target: str) -> object:
    try:
        mod = importlib.import_module(f"dicomflow.warehouse.{module}")
    except ModuleNotFoundError as exc:
        if exc.name == f"dicomflow.warehouse.{module}":
            raise WarehouseError(f"DDL target {target!r} is not available in this build (no dicomflow.warehouse.{module})") from exc
        raise
    fn = getattr(mod, function, None)
    if fn is None:
        raise WarehouseError(f"DDL target {target!r}: dicomflow.warehouse.{module} has no {function}()")
    return fn


def ddl(settings: Settings, target: Target, *, clickhouse_legacy: bool = False) -> str:
    """The DDL text for ``target``, generated from the wire-format model.

    Raises:
        WarehouseError: unknown target, or its generator is not available.
    """
    if target == "duckdb":
        from dicomflow.warehouse.ddl_duckdb import duckdb_ddl

        return duckdb_ddl()
    if target == "clickhouse":
        fn = _generator("ddl_clickhouse", "clickhouse_ddl", target)
        return str(fn(settings, clickhouse_legacy))  # type: ignore[operator]
    if target == "doris":
        fn = _generator("ddl_doris", "doris_ddl", target)
        return str(fn(settings))  # type: ignore[operator]
    raise WarehouseError(f"unknown DDL target {target!r}; expected one of {', '.join(TARGETS)}")


__all__ = ["TARGETS", "Target", "WarehouseError", "ddl"]
