"""The ``dicomflow`` command line: on top of every stage, imported by none of them.

The CLI is the only place that reads the environment and the config file: it
builds one frozen :class:`~dicomflow.settings.Settings` (:mod:`.root`) and
passes it to the command, which passes the relevant part to each component.
It is also the only place that configures logging handlers.

Every command is registered here, statically, one module per command or
command group; a command module that cannot be imported is an import error of
the whole CLI, never a silently missing command. The command modules import
their stage's heavy parts inside the command functions, so ``--help`` stays fast.
"""

from __future__ import annotations

from dicomflow.cli import (
    config,
    consume,
    db,
    delete,
    demo,
    dlq,
    extract,
    images,
    publish,
    purge,
    report,
    scp,
    stack,
    storage,
    topics,
    users,
    warehouse,
    web,
)
from dicomflow.cli.root import app, settings_of

app.add_typer(config.app, name="config")
app.add_typer(stack.app, name="stack")
app.add_typer(storage.app, name="storage")
app.add_typer(topics.app, name="topics")
app.command("extract")(extract.extract)
app.add_typer(db.app, name="db")
app.command("consume")(consume.consume)
app.command("delete")(delete.delete)
app.command("purge")(purge.purge)
app.command("undelete")(delete.undelete)
app.add_typer(dlq.app, name="dlq")
app.command("scp")(scp.scp)
app.add_typer(users.app, name="users")
app.command("publish")(publish.publish)
app.command("web")(web.web)
app.command("images")(images.images)
app.add_typer(warehouse.app, name="warehouse")
app.command("report")(report.report)
app.command("demo")(demo.demo)


def main() -> None:
    """Console entry point (``dicomflow``, ``python -m dicomflow``, ``python -m dicomflow.cli``)."""
    app()


__all__ = ["app", "main", "settings_of"]
