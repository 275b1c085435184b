"""``dicomflow config show``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from dicomflow.cli.root import settings_of
from dicomflow.settings import as_dict

app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


@app.command("show")
def config_show(
    ctx: typer.Context,
    reveal: Annotated[bool, typer.Option("--reveal-secrets", help="Print passwords too.")] = False,
) -> None:
    """Print the effective settings as JSON, secrets masked."""
    typer.echo(json.dumps(as_dict(settings_of(ctx), mask_secrets=not reveal), indent=2))
