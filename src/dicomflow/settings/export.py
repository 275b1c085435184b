"""Settings going out: as plain data for ``config show`` (secrets masked), and to a child process.

:func:`to_child_env` writes every field as its ``DICOMFLOW_<SECTION>_<KEY>``
variable (a nested table's as ``DICOMFLOW_WEB_OAUTH2_JWKS``), in the form the
loader reads back exactly (booleans ``true``/``false``, tuples and tables as
JSON); :func:`~dicomflow.settings.loader.from_child_env` reads them back.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dicomflow.settings.schema import Settings

_SECRET_WORDS = ("password", "secret", "sasl.password", "ssl.key.password", "token")


def to_child_env(settings: Settings, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that gives a child process exactly ``settings``.

    The one way dicomflow hands settings to another process (receiver
    workers, the demo's components, the fault suite, tests): every field
    becomes its ``DICOMFLOW_<SECTION>_<KEY>`` variable (tuples and tables
    as JSON, paths as given, secrets included: it goes to the child
    only), and the child reads them back with
    :func:`~dicomflow.settings.loader.from_child_env` or as any
    ``dicomflow`` command does. ``base`` (typically ``os.environ``, passed
    in by the caller) is copied first, without its ``DICOMFLOW_*``
    variables, so nothing of the parent's configuration leaks past these
    settings.
    """
    env = {k: v for k, v in (base or {}).items() if not k.startswith("DICOMFLOW_")}
    _put(env, "DICOMFLOW", settings)
    return env


def _put(env: dict[str, str], prefix: str, obj: Any) -> None:
    """One variable per field of ``obj``; a sub-table (``[receiver.tls]``) as ``<PREFIX>_TLS_<KEY>``."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        name = f"{prefix}_{f.name}".upper()
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _put(env, name, value)
        else:
            env[name] = _env_value(value)


def _env_value(value: Any) -> str:
    """One setting as the loader parses it from an environment variable."""
    if value is None:
        return ""  # an optional setting left unset: the loader reads "" back as None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return json.dumps(list(value))  # JSON, not commas: an item may hold a comma
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def as_dict(settings: Settings, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``***``."""

    def convert(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: convert(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, Mapping):
            return {str(k): ("***" if mask_secrets and _is_secret(str(k)) and v else convert(v)) for k, v in obj.items()}
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, tuple):
            return [convert(v) for v in obj]
        if mask_secrets and _is_secret(key) and obj:
            return "***"
        if mask_secrets and key == "dsn" and obj:
            return _mask_dsn(str(obj))
        return obj

    result = convert(settings)
    assert isinstance(result, dict)
    return result


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _mask_dsn(dsn: str) -> str:
    """Hide a password inside a URL or key=value DSN."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn)



__all__ = ["as_dict", "to_child_env"]
