"""``dicomflow web``: the DICOMweb server (QIDO-RS, WADO-RS, STOW-RS) on uvicorn."""

from __future__ import annotations

import dataclasses
import logging
from typing import Annotated, Optional

import typer

from dicomflow.cli.root import settings_of


def web(
    ctx: typer.Context,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on (default: web.host).")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="TCP port (default: web.port).")] = None,
    workers: Annotated[
        Optional[int], typer.Option("--workers", min=1, help="Server processes sharing the port (default: web.workers).")
    ] = None,
    ssl_certfile: Annotated[Optional[str], typer.Option("--ssl-certfile", help="PEM certificate (chain): serve HTTPS.")] = None,
    ssl_keyfile: Annotated[Optional[str], typer.Option("--ssl-keyfile", help="PEM private key of the certificate.")] = None,
    ssl_keyfile_password: Annotated[Optional[str], typer.Option("--ssl-keyfile-password", help="Password of the key file.")] = None,
    ssl_ca_certs: Annotated[Optional[str], typer.Option("--ssl-ca-certs", help="CA bundle for client certificates.")] = None,
) -> None:
    """Serve DICOMweb from the PostgreSQL index and the storage root until SIGTERM / SIGINT.

    QIDO-RS (/studies, /series, /instances), WADO-RS (instances, metadata,
    frames, bulk data, rendered, thumbnail), /healthz and /metrics.
    Requests need an OAuth2 bearer token unless web.auth = "none".
    """
    from dicomflow.errors import ConfigError
    from dicomflow.web.auth import Authenticator
    from dicomflow.web.server import TLSOptions, serve

    # psycopg_pool warns at every failed reconnection and discarded connection; an outage is logged
    # once by the server instead (dicomflow.web.database.Outage), its errors are kept.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    settings = settings_of(ctx)
    changes = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, **changes))  # type: ignore[arg-type]
    try:
        Authenticator(settings)  # fail fast, naming the missing setting, before any worker starts
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc
    serve(settings, TLSOptions(ssl_certfile, ssl_keyfile, ssl_keyfile_password, ssl_ca_certs))
