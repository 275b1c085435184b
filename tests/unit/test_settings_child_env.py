"""Settings.to_child_env / from_child_env: every setting reaches a child process unchanged."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dicomflow.settings import Settings, as_dict

#: Values the validation constrains, set by hand; every other field gets one derived from its type.
CONSTRAINED: dict[str, Any] = {
    "receiver.ae_title": "CHILD AE",
    "receiver.tenant_tag": "0011,1010",
    "receiver.port": 4242,
    "kafka.brokers": "k1:9092,k2:9093",
}


def _other_value(key: str, tp: Any, default: Any) -> Any:
    """A value of type ``tp`` that differs from ``default`` (so a setting that is lost shows)."""
    if key in CONSTRAINED:
        return CONSTRAINED[key]
    origin = get_origin(tp)
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


def everything_changed() -> Settings:
    """Settings in which every field, nested ones included, differs from its default."""
    base = Settings()
    changes: dict[str, Any] = {}
    for top in dataclasses.fields(Settings):
        value = getattr(base, top.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            hints = get_type_hints(type(value))
            section = {f.name: _other_value(f"{top.name}.{f.name}", hints[f.name], getattr(value, f.name))
                       for f in dataclasses.fields(value)}
            changes[top.name] = dataclasses.replace(value, **section)
        else:
            changes[top.name] = _other_value(top.name, get_type_hints(Settings)[top.name], value)
    return dataclasses.replace(base, **changes)


def leaves(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for top in dataclasses.fields(settings):
        value = getattr(settings, top.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update({f"{top.name}.{f.name}": getattr(value, f.name) for f in dataclasses.fields(value)})
        else:
            out[top.name] = value
    return out


def test_every_field_survives_the_round_trip() -> None:
    original = everything_changed()
    defaults = leaves(Settings())
    changed = leaves(original)
    assert all(changed[k] != defaults[k] for k in defaults), "the test settings must change every field"

    back = Settings.from_child_env(original.to_child_env())

    assert back == original
    for key, value in leaves(back).items():  # the same values, and of the same types
        assert value == changed[key], key
        assert isinstance(value, (type(changed[key]), Mapping)), key


def test_the_defaults_survive_too() -> None:
    assert Settings.from_child_env(Settings().to_child_env()) == Settings()


def test_the_base_environment_is_kept_but_not_its_dicomflow_variables() -> None:
    env = Settings().to_child_env({"PATH": "/usr/bin", "DICOMFLOW_CONFIG": "/etc/other.toml",
                                   "DICOMFLOW_KAFKA_BROKERS": "elsewhere:9092"})
    assert env["PATH"] == "/usr/bin"
    assert "DICOMFLOW_CONFIG" not in env
    assert env["DICOMFLOW_KAFKA_BROKERS"] == "127.0.0.1:19092"
    assert all(isinstance(v, str) for v in env.values())


def test_a_dicomflow_child_process_sees_the_same_settings(tmp_path: Path) -> None:
    original = everything_changed()
    script = (
        "import os, sys; from dicomflow.settings import Settings, as_dict; import json; "
        "sys.stdout.write(json.dumps(as_dict(Settings.from_child_env(os.environ), mask_secrets=False)))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=original.to_child_env({"PATH": "/usr/bin:/bin"}),
                         cwd=tmp_path, capture_output=True, check=True, text=True).stdout
    assert json.loads(out) == json.loads(json.dumps(as_dict(original, mask_secrets=False)))
