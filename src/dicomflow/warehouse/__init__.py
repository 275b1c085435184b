"""The analytics warehouse: the embedded DuckDB sink, ClickHouse/Doris DDL and the ingest report.

Every table and column comes from the one wire-format model (:mod:`.schema`).
"""
