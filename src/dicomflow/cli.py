"""The ``dicomflow`` command line.

The CLI is the only place that reads the environment and the config file: it
builds one frozen :class:`~dicomflow.settings.Settings` and passes it to the
command, which passes the relevant part to each component. It is also the only
place that configures logging handlers.

Each stage contributes its commands through a ``register(app)`` function in its
own ``commands`` module, so this file stays a table of contents.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.errors import ConfigError
from dicomflow.settings import Settings, as_dict, default_config_path, load_settings

app = typer.Typer(
    name="dicomflow",
    help="Move DICOM metadata through Apache Kafka into PostgreSQL and analytics warehouses.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


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
                self._settings = load_settings(path, os.environ)
            except ConfigError as exc:
                typer.echo(f"configuration error: {exc}", err=True)
                raise typer.Exit(2) from exc
        return self._settings


def settings_of(ctx: typer.Context) -> Settings:
    """The settings built by the top-level callback (for use in commands)."""
    obj = ctx.find_root().obj
    assert isinstance(obj, _LazySettings)
    return obj.get()


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    reveal: Annotated[bool, typer.Option("--reveal-secrets", help="Print passwords too.")] = False,
) -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(as_dict(settings_of(ctx), mask_secrets=not reveal), indent=2))


def _register_stages() -> None:
    """Let each stage add its commands; a stage not built yet is simply absent."""
    import importlib

    for module in (
        "dicomflow.stack.commands",
        "dicomflow.kafka.commands",
        "dicomflow.extract.commands",
        "dicomflow.store.commands",
        "dicomflow.pipeline.commands",
        "dicomflow.receiver.commands",
        "dicomflow.scanner.commands",
        "dicomflow.warehouse.commands",
        "dicomflow.warehouse.report_command",
        "dicomflow.demo",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                continue
            raise
        mod.register(app)


_register_stages()


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    # Run through the canonical module, not this ``__main__`` copy: the stage
    # commands import ``dicomflow.cli`` and must see the same settings object.
    from dicomflow.cli import main as _canonical_main

    _canonical_main()
