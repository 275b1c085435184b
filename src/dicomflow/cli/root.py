"""The root of the ``dicomflow`` command line: the Typer app, its callback and :func:`settings_of`.

The commands themselves are in the sibling modules and are registered in
:mod:`dicomflow.cli` (the package ``__init__``).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.errors import ConfigError
from dicomflow.settings import DeprecatedSettingWarning, Settings, default_config_path, load_settings

app = typer.Typer(
    name="dicomflow",
    help="Move DICOM metadata through Apache Kafka into PostgreSQL and analytics warehouses.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="TOML or application.json file (default: $DICOMFLOW_CONFIG or ./dicomflow.toml)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Build the settings once; every subcommand receives them through the context."""
    level = getattr(logging, log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # pynetdicom logs every DIMSE message at INFO: keep it for --log-level DEBUG only.
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    ctx.obj = _LazySettings(config)


class _LazySettings:
    """Load settings on first use, so ``--help`` works even with a broken config file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._settings: Settings | None = None

    def get(self) -> Settings:
        if self._settings is None:
            path = self.path or default_config_path(os.environ)
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", DeprecatedSettingWarning)
                    self._settings = load_settings(path, os.environ)
                _show(caught)
            except ConfigError as exc:
                typer.echo(f"configuration error: {exc}", err=True)
                raise typer.Exit(2) from exc
        return self._settings


def _show(caught: list[warnings.WarningMessage]) -> None:
    """A moved setting as one ``warning:`` line on stderr (other warnings go on as they came)."""
    for w in caught:
        if issubclass(w.category, DeprecatedSettingWarning):
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the top-level callback (for use in commands)."""
    obj = ctx.find_root().obj
    assert isinstance(obj, _LazySettings)
    return obj.get()


__all__ = ["app", "settings_of"]
