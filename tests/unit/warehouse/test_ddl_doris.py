"""The Doris DDL: CREATE TABLEs parse with sqlglot's Doris dialect; routine loads checked field by field.

Doris cannot be installed here, so this is the validation: sqlglot parses each
CREATE TABLE into a real syntax tree; sqlglot has no grammar for CREATE
ROUTINE LOAD (it falls back to an opaque command), so those statements are
taken apart structurally and checked against the parsed tables and the model.
"""

from __future__ import annotations

import dataclasses
import json
import re

import msgspec
import pytest
import sqlglot
from sqlglot import exp

from dicomflow.settings import Settings
from dicomflow.warehouse.ddl_doris import doris_ddl
from dicomflow.warehouse.schema import TABLES

#: The routine load's consumer group part per table.
_GROUP_PART = {"receipts": "object", "series_states": "state", "instances": "image", "audit_events": "audit"}


def _settings() -> Settings:
    s = Settings()
    return dataclasses.replace(
        s, kafka=dataclasses.replace(s.kafka, brokers="k1:9092,k2:9092"),
        doris=dataclasses.replace(s.doris, replication_num=2, max_error_number=77, group_prefix="grp"),
    )


def _statements(text: str) -> list[str]:
    out = []
    for chunk in text.split(";\n"):
        body = "\n".join(line for line in chunk.splitlines() if not line.startswith("--")).strip()
        if body:
            out.append(body)
    return out


@pytest.fixture(scope="module")
def ddl() -> dict[str, tuple[exp.Create, str]]:
    """table name -> (parsed CREATE TABLE, its routine load text)."""
    stmts = _statements(doris_ddl(_settings()))
    assert stmts[0].startswith("CREATE DATABASE")
    tables: dict[str, tuple[exp.Create, str]] = {}
    rest = stmts[1:]
    assert len(rest) == 2 * len(TABLES)
    for create_text, load_text in zip(rest[::2], rest[1::2], strict=True):
        assert not re.search(r",\s*\)", create_text), "trailing comma before a closing parenthesis"
        tree = sqlglot.parse_one(create_text, read="doris")
        assert isinstance(tree, exp.Create) and tree.kind == "TABLE"
        name = tree.this.this.name
        assert load_text.startswith("CREATE ROUTINE LOAD")
        tables[name] = (tree, load_text)
    assert set(tables) == {t.name for t in TABLES}
    return tables


def _columns(tree: exp.Create) -> dict[str, exp.ColumnDef]:
    return {c.name: c for c in tree.this.expressions if isinstance(c, exp.ColumnDef)}


def _not_null(col: exp.ColumnDef) -> bool:
    return any(isinstance(k.kind, exp.NotNullColumnConstraint) and not k.kind.args.get("allow_null")
               for k in col.constraints)


def _load_parts(text: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
    m = re.match(r"CREATE ROUTINE LOAD `[^`]+`\.`[^`]+` ON `([^`]+)`\nCOLUMNS\((.*)\)\nPROPERTIES \((.*?)\n\)\nFROM KAFKA \((.*)\n\)$",
                 text, re.S)
    assert m, text[:200]
    columns = [c.strip() for c in re.split(r",\s*(?![^()]*\))", m.group(2))]
    def props(body: str) -> dict[str, str]:
        pairs = re.findall(r'"((?:[^"\\]|\\.)*)"\s*=\s*"((?:[^"\\]|\\.)*)"', body)
        return {k: json.loads(f'"{v}"') for k, v in pairs}
    return columns, props(m.group(3)), props(m.group(4))


def test_every_wire_field_maps_to_exactly_one_jsonpath_and_one_existing_column(ddl: dict[str, tuple[exp.Create, str]]) -> None:
    for t in TABLES:
        tree, load = ddl[t.name]
        table_columns = _columns(tree)
        columns, props, _ = _load_parts(load)
        plain = [c for c in columns if "=" not in c]
        mapped = dict(c.split(" = ", 1) for c in columns if "=" in c)
        jsonpaths = json.loads(props["jsonpaths"])
        assert len(jsonpaths) == len(plain), f"{t.name}: jsonpaths and source columns differ in number"
        fields = [f.name for f in msgspec.inspect.type_info(t.model).fields]  # type: ignore[attr-defined]
        assert sorted(jsonpaths) == sorted(f"$.{f}" for f in fields), f"{t.name}: not one jsonpath per wire field"
        landed: list[str] = []
        for path, source in zip(jsonpaths, plain, strict=True):
            field = path[2:]
            if source == field:
                landed.append(field)
            else:
                assert source == f"{field}_text" and field in mapped and source in mapped[field]
                landed.append(field)
        assert sorted(landed) == sorted(fields)
        # every loaded or mapped column exists in the table, and the table has nothing the load cannot fill
        targets = [c for c in plain if c in table_columns] + list(mapped)
        assert sorted(targets) == sorted(table_columns), t.name
        # NOT NULL only where the model guarantees a value
        for f in msgspec.inspect.type_info(t.model).fields:  # type: ignore[attr-defined]
            nullable = isinstance(f.type, msgspec.inspect.UnionType)
            assert _not_null(table_columns[f.name]) == (not nullable), f"{t.name}.{f.name}"


def test_reference_script_defects_are_not_repeated(ddl: dict[str, tuple[exp.Create, str]]) -> None:
    assert "study_date_origin" not in _columns(ddl["instances"][0])
    assert "series_related_instances" in _columns(ddl["series_states"][0])
    assert "series_related_instances" not in _load_parts(ddl["instances"][1])[0]


def test_models_keys_partitions_and_load_properties_follow_the_settings(ddl: dict[str, tuple[exp.Create, str]]) -> None:
    s = _settings()
    for t in TABLES:
        tree, load = ddl[t.name]
        sql = tree.sql("doris").replace("`", "")
        if t.kind == "latest":
            assert "UNIQUE KEY" in sql and "'enable_unique_key_merge_on_write'='true'" in sql
            assert "'function_column.sequence_col'='updated_time'" in sql
        else:
            assert "DUPLICATE KEY" in sql
        assert "'replication_num'='2'" in sql
        if t.partition_column:
            assert f"PARTITION BY RANGE ({t.partition_column})" in sql and "'dynamic_partition.enable'='true'" in sql
        _, props, kafka = _load_parts(load)
        assert props["format"] == "json" and props["max_error_number"] == "77"
        assert kafka == {
            "kafka_broker_list": "k1:9092,k2:9092", "kafka_topic": getattr(s.topics, t.topic_attr),
            "property.group.id": f"grp_{_GROUP_PART[t.name]}_group",
            "property.kafka_default_offsets": "OFFSET_BEGINNING",
        }
    receipts_sql = ddl["receipts"][0].sql("doris").replace("`", "")
    assert "DUPLICATE KEY (tenant_id, patient_id, study_uid, series_uid, sop_uid, study_date)" in receipts_sql
