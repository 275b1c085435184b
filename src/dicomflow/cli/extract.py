"""``dicomflow extract PATH... [--tenant T]``: what the consumer would index, for a look.

Prints one JSON object per file on standard output, in the wire format:
``{"path", "state", "image"}`` when the file extracts, ``{"path", "error"}``
when it does not. The exit code is 0 when every file extracted, 1 otherwise,
so a shell loop or a CI job can check a folder before sending it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of


def extract(
    ctx: typer.Context,
    paths: Annotated[
        list[Path],
        typer.Argument(help="DICOM files; a folder stands for every file under it.", show_default=False),
    ],
    tenant: Annotated[
        Optional[str],
        typer.Option("--tenant", "-t", help="Tenant id (default: storage.default_tenant)."),
    ] = None,
) -> None:
    """Read DICOM headers and print the series-state and instance records as JSON lines."""
    import sys

    import msgspec

    from dicomflow.errors import ExtractError
    from dicomflow.extract import extract_file

    if tenant is None:
        tenant = settings_of(ctx).storage.default_tenant
    encode = msgspec.json.Encoder().encode
    out = sys.stdout.buffer
    failed = 0
    for path in _files(paths):
        line: dict[str, object] = {"path": str(path)}
        try:
            extracted = extract_file(path, tenant)
            line["state"], line["image"] = extracted.state, extracted.image
        except ExtractError as exc:
            line["error"] = exc.reason
        except OSError as exc:
            line["error"] = f"cannot read the file: {exc.strerror or exc}"
        failed += "error" in line
        out.write(encode(line) + b"\n")
    out.flush()
    if failed:
        raise typer.Exit(1)


def _files(paths: list[Path]) -> list[Path]:
    """The files named, folders expanded to the files under them (sorted, so output is stable)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file()))
        else:
            found.append(path)
    return found
