"""Settings that moved to another section: still read at their old place, with a warning.

:data:`MOVED` maps each old dotted key to its new one. The loader reads an
old key as its new one and warns (:class:`DeprecatedSettingWarning`, naming
both keys and the file or variable); when a source sets both, the new key
wins and the old one is ignored, with a warning that says so.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dicomflow.errors import DicomflowError

#: Old dotted key -> new dotted key. The ingest decisions left ``[receiver]``:
#: STOW-RS, ``publish`` and the image workers share them.
MOVED: dict[str, str] = {
    "receiver.fsync": "ingest.fsync",
    "receiver.tenant_tag": "ingest.tenant_tag",
    "receiver.ae_tenants": "ingest.ae_tenants",
    "receiver.supported_transfer_syntaxes": "ingest.supported_transfer_syntaxes",
}


class DeprecatedSettingWarning(DicomflowError, FutureWarning):
    """A setting was given under its old key; it still works, under the new one.

    A :class:`FutureWarning` (shown to users by default, unlike
    ``DeprecationWarning``) and, like every exception class of dicomflow, a
    :class:`~dicomflow.errors.DicomflowError`: under ``-W error`` it is
    raised, and reported as any other dicomflow error.
    """


def env_name(dotted: str) -> str:
    """The environment variable of a dotted key (``ingest.fsync`` -> ``DICOMFLOW_INGEST_FSYNC``)."""
    return "DICOMFLOW_" + dotted.replace(".", "_").upper()


def current_keys(flat: Mapping[str, Any], source_of: Callable[[str], str]) -> Iterator[tuple[str, str, Any]]:
    """``(key, source, value)`` for each entry of ``flat``, an old key renamed to its new one (with a warning).

    ``source_of(key)`` names where ``key`` came from (the file, or the
    environment variable); a renamed entry keeps its old key's source, so a
    bad value is reported where it was written.
    """
    for dotted, value in flat.items():
        new = MOVED.get(dotted)
        source = source_of(dotted)
        if new is None:
            yield dotted, source, value
            continue
        if new in flat:
            _warn(f"{source}: {dotted} is deprecated and ignored here, {new} is set too{_env_hint(source, new)}")
            continue
        _warn(f"{source}: {dotted} is deprecated; use {new}{_env_hint(source, new)}")
        yield new, source, value


def _env_hint(source: str, new: str) -> str:
    return f" ({env_name(new)})" if source.startswith("environment") else ""


def _warn(message: str) -> None:
    warnings.warn(message, DeprecatedSettingWarning, stacklevel=5)


__all__ = ["MOVED", "DeprecatedSettingWarning", "current_keys", "env_name"]
