"""The root of the ``dicomflow`` command line: the Typer app, its callback and :func:`settings_of`.

The commands themselves are in the sibling modules and are registered in
:mod:`dicomflow.cli` (the package ``__init__``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.errors import ConfigError, StackError
from dicomflow.settings import DeprecatedSettingWarning, Settings, default_config_path, is_set, load_settings

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
                    settings = load_settings(path, os.environ)
                    self._settings = _brokers_of_the_stack(settings, path)
                _show(caught)
            except (ConfigError, StackError) as exc:
                typer.echo(f"configuration error: {exc}", err=True)
                raise typer.Exit(2) from exc
        return self._settings


def _brokers_of_the_stack(settings: Settings, path: Path | None) -> Settings:
    """``settings`` with every node of the running local stack as ``kafka.brokers``, unless the user set that key.

    ``stack up --brokers 3`` remembers its nodes in the stack folder; without
    this a command would bootstrap from the default (node 1 alone) and be cut
    off from the cluster while node 1 is down.

    Raises:
        StackError: the stack folder's state file is unreadable (naming it).
    """
    if is_set(path, os.environ, "kafka.brokers"):
        return settings
    from dicomflow.stack.state import read_state

    state = read_state(settings.stack.dir)
    if state is None or state.bootstrap == settings.kafka.brokers:
        return settings
    return dataclasses.replace(settings, kafka=dataclasses.replace(settings.kafka, brokers=state.bootstrap))


def _show(caught: list[warnings.WarningMessage]) -> None:
    """A moved setting as one ``warning:`` line on stderr (other warnings go on as they came)."""
    shown: set[str] = set()
    for w in caught:
        if issubclass(w.category, DeprecatedSettingWarning):
            if str(w.message) in shown:
                continue  # is_set reads the sources a second time
            shown.add(str(w.message))
            typer.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the top-level callback (for use in commands)."""
    obj = ctx.find_root().obj
    assert isinstance(obj, _LazySettings)
    return obj.get()


__all__ = ["app", "settings_of"]
