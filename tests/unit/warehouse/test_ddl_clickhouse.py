"""The current-syntax ClickHouse DDL (the legacy syntax runs on the real 18.16 server in tests/integration).

No server of a current version can be installed here, so the current syntax
is parsed with sqlglot's ClickHouse dialect and its engine clauses checked.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from dicomflow.settings import Settings
from dicomflow.warehouse.ddl_clickhouse import clickhouse_ddl, split_statements
from dicomflow.warehouse.schema import TABLES


def test_current_syntax_parses_and_uses_settings_skip_broken_and_datetime64() -> None:
    text = clickhouse_ddl(Settings(), legacy=False)
    statements = split_statements(text)
    assert len(statements) == 1 + 5 * len(TABLES)
    for st in statements:
        assert isinstance(sqlglot.parse_one(st, read="clickhouse"), exp.Create)
    for t in TABLES:
        kafka = next(s for s in statements if s.startswith(f"CREATE TABLE IF NOT EXISTS dicomflow.{t.name}_kafka"))
        assert "kafka_format = 'JSONAsString'" in kafka and "kafka_skip_broken_messages = 1000" in kafka
        target = next(s for s in statements if s.startswith(f"CREATE TABLE IF NOT EXISTS dicomflow.{t.name} ("))
        engine = "MergeTree()" if t.kind == "append" else "ReplacingMergeTree(updated_time)"
        assert f"ENGINE = {engine}" in target and f"ORDER BY ({', '.join(t.key)})" in target
        assert ("PARTITION BY toYYYYMM(study_date)" in target) == (t.partition_column == "study_date")
        assert "DateTime64(6)" in target and "_text" not in target
    groups = {line.split("'")[1] for line in text.splitlines() if "kafka_group_name" in line}
    assert groups == {"medical_object_group", "medical_state_group", "medical_image_group", "medical_audit_group"}


def test_legacy_syntax_is_positional_without_datetime64() -> None:
    text = clickhouse_ddl(Settings(), legacy=True)
    assert "SETTINGS" not in text and "DateTime64" not in text
    assert "ENGINE = Kafka('127.0.0.1:19092', 'log_queue', 'medical_object_group', 'TabSeparated', '\\n', '', 1)" in text
    assert "created_time_text String" in text
