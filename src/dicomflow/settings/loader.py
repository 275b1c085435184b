"""Building :class:`~dicomflow.settings.schema.Settings` from its sources, later wins:

1. built-in defaults (a local single-node stack under ``.dicomflow/``);
2. a TOML file (``dicomflow.toml``) with one table per section;
3. the reference services' ``application.json`` layout (:mod:`.reference`),
   accepted in either file format so an existing deployment's config works;
4. ``DICOMFLOW_<SECTION>_<KEY>`` environment variables
   (``DICOMFLOW_KAFKA_BROKERS=host:9092``); a list as ``a,b`` or as JSON
   (``["a", "b"]``), a table as JSON.

Library code never reads the environment or a file: :func:`load_settings` is
called by the CLI (and by tests) and the result flows into each component.
A bad value raises :class:`~dicomflow.errors.ConfigError` naming the key and
the file (or variable) it came from.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dicomflow.errors import ConfigError
from dicomflow.settings.aws import aws_fallbacks
from dicomflow.settings.deprecated import current_keys, env_name
from dicomflow.settings.reference import REFERENCE_KEYS, REFERENCE_ONLY_SECTIONS
from dicomflow.settings.schema import Settings
from dicomflow.settings.validation import validate


def _sections() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(hints[f.name])}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert a raw TOML/JSON/env value to the annotated type, or say why not.

    Optional and list types are unwrapped here; the value itself is
    converted by the converter of its type (:func:`_converter`).
    """
    origin = get_origin(tp)
    from_env = isinstance(value, str) and source.startswith("environment")
    if origin in (types.UnionType, typing.Union) and type(None) in get_args(tp):
        if value is None or (from_env and value == ""):
            return None  # an optional setting left unset ("" from the environment)
        (inner,) = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(value, inner, key, source)
    try:
        if origin is tuple:
            return tuple(_coerce(v, get_args(tp)[0], key, source) for v in _to_list(value, from_env))
        convert = _converter(tp)
        if convert is None:
            raise ConfigError(key, source, f"unsupported setting type {tp!r}")
        return convert(value, tp, from_env)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(key, source, str(exc)) from exc


def _to_bool(value: Any, _tp: Any, from_env: bool) -> bool:
    if isinstance(value, bool):
        return value
    if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return bool(value.lower() in ("1", "true", "yes", "on"))
    raise ValueError(f"expected true or false, got {value!r}")


def _to_int(value: Any, _tp: Any, _from_env: bool) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"expected an integer, got {value!r}")


def _to_float(value: Any, _tp: Any, _from_env: bool) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        return float(value)
    raise ValueError(f"expected a number, got {value!r}")


def _to_str(value: Any, _tp: Any, _from_env: bool) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"expected a string, got {value!r}")


def _to_path(value: Any, _tp: Any, _from_env: bool) -> Path:
    if isinstance(value, str):
        return Path(value)
    raise ValueError(f"expected a path string, got {value!r}")


def _to_literal(value: Any, tp: Any, _from_env: bool) -> Any:
    allowed = get_args(tp)
    if value in allowed:
        return value
    raise ValueError(f"expected one of {', '.join(map(str, allowed))}; got {value!r}")


def _to_table(value: Any, _tp: Any, from_env: bool) -> Mapping[str, str]:
    if isinstance(value, str) and from_env:
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of strings, got {value!r}")
    return types.MappingProxyType({str(k): str(v) for k, v in value.items()})


def _to_list(value: Any, from_env: bool) -> list[Any]:
    """A list setting's items: a TOML list, or from the environment ``a,b`` or a JSON list."""
    if isinstance(value, str) and from_env and value.lstrip().startswith("["):
        value = json.loads(value)  # a JSON list (what to_child_env writes)
    elif isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()] if from_env else [value]
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {value!r}")
    return value


_Converter = Callable[[Any, Any, bool], Any]
_SCALARS: dict[Any, _Converter] = {bool: _to_bool, int: _to_int, float: _to_float, str: _to_str, Path: _to_path}


def _converter(tp: Any) -> _Converter | None:
    """The converter of a (non-optional, non-list) setting type; None for a type settings never use."""
    origin = get_origin(tp)
    if origin is Literal:
        return _to_literal
    if origin in (Mapping, dict, typing.Mapping) or tp is dict:
        return _to_table
    return _SCALARS.get(tp)


#: Settings whose value is itself a table (not a section or sub-table).
_TABLE_SETTINGS = frozenset({"kafka.client", "ingest.ae_tenants", "receiver.ae_tenants", "qr.destinations"})


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in _TABLE_SETTINGS:
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _apply(
    overrides: dict[str, dict[str, Any]], flat: Mapping[str, Any], source_of: Callable[[str], str]
) -> None:
    """Validate ``section.key`` values from one source into ``overrides``.

    ``source_of(key)`` names where a key came from (the file, the variable).
    A key that moved (:data:`~dicomflow.settings.deprecated.MOVED`) is read
    as its new one, with a :class:`~dicomflow.settings.deprecated.DeprecatedSettingWarning`.
    """
    sections = _sections()
    top_hints = get_type_hints(Settings)
    for dotted, source, raw in current_keys(flat, source_of):
        section, key = REFERENCE_KEYS.get(dotted, (None, None)) or (None, None)
        if section is None:
            if "." not in dotted:
                if dotted == "worker_node_id":
                    overrides.setdefault("", {})[dotted] = _coerce(raw, top_hints[dotted], dotted, source)
                    continue
                raise ConfigError(dotted, source, "unknown setting")
            section, key = dotted.split(".", 1)
        if section not in sections:
            # Reference sections we do not use (log, redis, storage paths ...) are tolerated.
            if section in REFERENCE_ONLY_SECTIONS:
                continue
            raise ConfigError(dotted, source, f"unknown section {section!r}")
        hints = get_type_hints(sections[section])
        target = overrides.setdefault(section, {})
        key, hints, target = _nested(str(key), hints, target, source.startswith("environment"))
        if key not in hints:
            raise ConfigError(dotted, source, f"unknown key {key!r} in [{section}]")
        if _switchable(hints[key]) and not isinstance(raw, dict):
            # ``[web] viewer = false``: a bare boolean for a sub-table with an ``enabled`` switch
            target.setdefault(key, {})["enabled"] = _coerce(raw, bool, dotted, source)
            continue
        target[key] = _coerce(raw, hints[key], dotted, source)


def _switchable(tp: Any) -> bool:
    """A sub-table (``[web.viewer]``) that also takes a bare boolean: its ``enabled`` field."""
    return dataclasses.is_dataclass(tp) and "enabled" in {f.name for f in dataclasses.fields(tp)}


def _nested(
    key: str, hints: dict[str, Any], target: dict[str, Any], from_env: bool
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Descend into a sub-table (``[receiver.tls]``: key ``tls.port``, or ``tls_port`` from the environment)."""
    for name, tp in hints.items():
        if not dataclasses.is_dataclass(tp):
            continue
        for sep in (".", "_") if from_env else (".",):
            if key.startswith(name + sep):
                sub = target.setdefault(name, {})
                if not isinstance(sub, dict):
                    break
                return key[len(name) + 1:], get_type_hints(tp), sub
    return key, hints, target


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", source, f"cannot read: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("<syntax>", source, str(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError("<root>", source, "expected a table / object at the top level")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    flat: dict[str, str] = {}
    sections = _sections()
    for name, value in env.items():
        if not name.startswith("DICOMFLOW_") or name == "DICOMFLOW_CONFIG":
            continue
        rest = name[len("DICOMFLOW_"):].lower()
        if rest == "worker_node_id":
            flat[rest] = value
            continue
        section, _, key = rest.partition("_")
        if section in sections and key:
            flat[f"{section}.{key}"] = value
        else:
            raise ConfigError(name, "environment", "unknown setting")
    return flat


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, an optional file, environment and overrides.

    ``env`` is passed in (the CLI passes ``os.environ``) so that nothing here
    depends on the process environment by surprise. ``overrides`` are dotted
    keys (``{"kafka.brokers": "..."}``), used by tests and CLI options.

    Raises:
        ConfigError: naming the key and the file or variable it came from.
    """
    return _build(_collect(path, env, overrides))


def is_set(path: Path | None, env: Mapping[str, str] | None, key: str) -> bool:
    """Whether the file at ``path`` or ``env`` sets the dotted ``key`` (``kafka.brokers``), whatever its value.

    For defaults that depend on more than the schema: the CLI takes
    ``kafka.brokers`` from the running local stack only when the user did not set it.

    Raises:
        ConfigError: as :func:`load_settings`.
    """
    section, _, name = key.rpartition(".")
    return name in _collect(path, env, None).get(section, {})


def _collect(
    path: Path | None, env: Mapping[str, str] | None, overrides: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    collected: dict[str, dict[str, Any]] = {}
    if env is not None:  # fallbacks first: the file and DICOMFLOW_* variables below win over them
        _apply(collected, aws_fallbacks(env), lambda _key: "AWS environment or credentials file")
    if path is not None:
        _apply(collected, _flatten(_read_file(path)), lambda _key: str(path))
    if env is not None:
        _apply(collected, _env_overrides(env), lambda key: f"environment variable {env_name(key)}")
    if overrides:
        _apply(collected, dict(overrides), lambda _key: "override")
    return collected


def from_child_env(env: Mapping[str, str]) -> Settings:
    """The settings a parent handed over with :func:`~dicomflow.settings.export.to_child_env`, validated like any source.

    Raises:
        ConfigError: a variable holds a value its setting cannot take.
    """
    return load_settings(None, env)


def _build(collected: dict[str, dict[str, Any]]) -> Settings:
    sections = _sections()
    kwargs: dict[str, Any] = dict(collected.get("", {}))
    for name, cls in sections.items():
        values = dict(collected.get(name, {}))
        hints = get_type_hints(cls)
        for key, value in list(values.items()):
            sub = hints.get(key)
            if isinstance(value, dict) and dataclasses.is_dataclass(sub) and isinstance(sub, type):
                values[key] = sub(**value)  # a sub-table such as [receiver.tls]
        kwargs[name] = cls(**values)
    settings = Settings(**kwargs)
    validate(settings)
    return settings


def default_config_path(env: Mapping[str, str]) -> Path | None:
    """The config file the CLI uses: ``$DICOMFLOW_CONFIG`` or ``./dicomflow.toml`` if present."""
    explicit = env.get("DICOMFLOW_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("dicomflow.toml")
    return local if local.exists() else None

__all__ = ["default_config_path", "from_child_env", "load_settings"]
