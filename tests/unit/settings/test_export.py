"""to_child_env / from_child_env: every setting reaches a child process unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dicomflow.settings import Settings, as_dict, from_child_env, to_child_env

#: Values the validation constrains, set by hand; every other field gets one derived from its type.
CONSTRAINED: dict[str, Any] = {
    "receiver.ae_title": "CHILD AE",
    "ingest.tenant_tag": "0011,1010",
    "receiver.port": 4242,
    "kafka.brokers": "k1:9092,k2:9093",
    "web.cors_origins": ("https://viewer.example", "http://127.0.0.1:3000"),
    "lifecycle.purge_delay": "7d",
    "qr.destinations": {"STORE SCP": "pacs.example:104", "WS1": "[::1]:11113"},
}
#: Left at their default in :func:`everything_changed` because the validation ties them to
#: another field that it changes; a test of their own carries them.
KEPT: frozenset[str] = frozenset({
    "receiver.tls.port",  # a TLS listener beside the plain port needs receiver.processes = 1
})


def _other_value(key: str, tp: Any, default: Any) -> Any:
    """A value of type ``tp`` that differs from ``default`` (so a setting that is lost shows)."""
    if key in CONSTRAINED:
        return CONSTRAINED[key]
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union) and type(None) in get_args(tp):
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _other_value(key, inner, default)
    if tp is bool:
        return not default
    if tp is int:
        return default + 7
    if tp is float:
        return default + 0.125
    if tp is str:
        return f"{key}, with a comma and ünïcode"
    if tp is Path:
        return Path(f"/tmp/child dir/{key}")
    if origin is Literal:
        return next(v for v in get_args(tp) if v != default)
    if origin is tuple and get_args(tp)[0] is int:
        return (29192, 29194, 29196)
    if origin is tuple:
        return ("first, with a comma", "[bracketed]", "third")
    if origin in (Mapping, dict, typing.Mapping):
        return {"security.protocol": "SASL_SSL", "key with space": "value, with comma"}
    raise AssertionError(f"no test value for {key}: {tp!r}")


def _changed(obj: Any, prefix: str) -> Any:
    """``obj`` (a settings dataclass) with every field changed, sub-tables ([receiver.tls]) included."""
    hints = get_type_hints(type(obj))
    values: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        key, value = f"{prefix}{f.name}", getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            values[f.name] = _changed(value, key + ".")
        elif key not in KEPT:
            values[f.name] = _other_value(key, hints[f.name], value)
    return dataclasses.replace(obj, **values)


def everything_changed() -> Settings:
    """Settings in which every field, nested ones included, differs from its default (but :data:`KEPT`)."""
    changed = _changed(Settings(), "")
    assert isinstance(changed, Settings)
    return changed


def leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every setting by its dotted name (``web.oauth2.jwks``), nested sections flattened."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(leaves(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def test_every_field_survives_the_round_trip() -> None:
    original = everything_changed()
    defaults = leaves(Settings())
    changed = leaves(original)
    assert {"receiver.tls.cert_file", "receiver.tls.ca_file", "ingest.duplicates",
            "receiver.users_file", "receiver.max_dataset_bytes"} <= defaults.keys()
    assert all(changed[k] != defaults[k] for k in defaults if k not in KEPT), \
        "the test settings must change every field"

    back = from_child_env(to_child_env(original))

    assert back == original
    for key, value in leaves(back).items():  # the same values, and of the same types
        assert value == changed[key], key
        assert isinstance(value, (type(changed[key]), Mapping)), key


def test_the_dicomweb_and_image_sections_are_covered() -> None:
    keys = leaves(Settings())
    for key in ("web.host", "web.port", "web.workers", "web.auth", "web.max_stow_bytes",
                "web.oauth2.jwks", "web.oauth2.issuer", "web.oauth2.audience", "web.oauth2.tenant_claim",
                "web.oauth2.read_scope", "web.oauth2.write_scope",
                "images.group_id", "images.batch_max_messages", "images.batch_max_ms", "images.thumbnail_size"):
        assert key in keys, key
    env = to_child_env(everything_changed())
    assert env["DICOMFLOW_WEB_OAUTH2_TENANT_CLAIM"] == "web.oauth2.tenant_claim, with a comma and ünïcode"
    assert env["DICOMFLOW_WEB_AUTH"] == "none"
    assert env["DICOMFLOW_IMAGES_THUMBNAIL_SIZE"] == "135"


def test_the_defaults_survive_too() -> None:
    assert from_child_env(to_child_env(Settings())) == Settings()


def test_unset_optional_paths_stay_unset() -> None:
    env = to_child_env(Settings())
    assert env["DICOMFLOW_RECEIVER_TLS_CERT_FILE"] == ""
    assert env["DICOMFLOW_RECEIVER_USERS_FILE"] == ""
    back = from_child_env(env)
    assert back.receiver.tls.cert_file is None and back.receiver.users_file is None


def test_the_kept_fields_survive_in_settings_of_their_own() -> None:
    tls = dataclasses.replace(Settings().receiver.tls, cert_file=Path("/tmp/c.pem"), key_file=Path("/tmp/k.pem"),
                              port=2762)
    original = dataclasses.replace(Settings(), receiver=dataclasses.replace(Settings().receiver, tls=tls))
    assert {k for k in KEPT if leaves(original)[k] != leaves(Settings())[k]} == KEPT
    assert from_child_env(to_child_env(original)) == original


def test_the_base_environment_is_kept_but_not_its_dicomflow_variables() -> None:
    env = to_child_env(Settings(), {"PATH": "/usr/bin", "DICOMFLOW_CONFIG": "/etc/other.toml",
                                   "DICOMFLOW_KAFKA_BROKERS": "elsewhere:9092"})
    assert env["PATH"] == "/usr/bin"
    assert "DICOMFLOW_CONFIG" not in env
    assert env["DICOMFLOW_KAFKA_BROKERS"] == "127.0.0.1:19092"
    assert all(isinstance(v, str) for v in env.values())


def test_a_dicomflow_child_process_sees_the_same_settings(tmp_path: Path) -> None:
    original = everything_changed()
    script = (
        "import os, sys; from dicomflow.settings import as_dict, from_child_env; import json; "
        "sys.stdout.write(json.dumps(as_dict(from_child_env(os.environ), mask_secrets=False)))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=to_child_env(original, {"PATH": "/usr/bin:/bin"}),
                         cwd=tmp_path, capture_output=True, check=True, text=True).stdout
    assert json.loads(out) == json.loads(json.dumps(as_dict(original, mask_secrets=False)))


def test_the_warehouse_sections_reach_the_child() -> None:
    """[warehouse], [clickhouse], [doris] and the stack's ClickHouse keys travel like the rest."""
    original = everything_changed()
    env = to_child_env(original)
    assert env["DICOMFLOW_WAREHOUSE_PATH"] == str(original.warehouse.path)
    assert env["DICOMFLOW_WAREHOUSE_SNAPSHOT_INTERVAL_S"] == repr(original.warehouse.snapshot_interval_s)
    assert env["DICOMFLOW_CLICKHOUSE_URL"] == original.clickhouse.url
    assert env["DICOMFLOW_DORIS_REPLICATION_NUM"] == str(original.doris.replication_num)
    assert env["DICOMFLOW_STACK_CLICKHOUSE"] == "true"
    back = from_child_env(env)
    for section in ("warehouse", "clickhouse", "doris", "stack"):
        assert getattr(back, section) == getattr(original, section), section
        assert getattr(back, section) != getattr(Settings(), section), section
    assert back.warehouse.snapshot_file() == original.warehouse.snapshot_file()
