"""``dicomflow users add NAME``: the users the receiver accepts (DICOM user identity, ``receiver.users_file``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of

app = typer.Typer(help="Users the receiver accepts (DICOM user identity, receiver.users_file).",
                  no_args_is_help=True)


@app.command("add")
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Username (as the sender's user identity names it).")],
    users_file: Annotated[
        Optional[Path], typer.Option("--file", "-f", help="Users file (default: receiver.users_file).")
    ] = None,
) -> None:
    """Add a user, or change its password, in the users file (salted scrypt hash, mode 0600).

    The password is read from the terminal (asked twice), or from the first
    line of standard input when that is not a terminal.
    """
    from dicomflow.errors import ConfigError
    from dicomflow.receiver.identity import add_user

    path = users_file or settings_of(ctx).receiver.users_file
    if path is None:
        raise typer.BadParameter("no users file: pass --file or set receiver.users_file", param_hint="--file")
    if sys.stdin.isatty():
        password = typer.prompt(f"password for {name}", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        typer.echo("error: empty password", err=True)
        raise typer.Exit(2)
    try:
        new = add_user(path, name, password)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="NAME") from exc
    except (ConfigError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"{'added' if new else 'changed the password of'} user {name} in {path}", err=True)
