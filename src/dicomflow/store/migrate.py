"""Versioned schema migrations: numbered SQL files, each applied once, in order.

The files live in ``store/migrations/`` and are named ``NNNN_description.sql``;
the version is the number. Applied versions are recorded in
``schema_migrations`` together with a checksum of the file, so a file edited
after it was applied is reported (by ``dicomflow db status`` and a warning
here) instead of silently diverging from the databases it already ran on.

Each file runs inside one transaction together with its bookkeeping row: a
file either applies completely or not at all. Statements that cannot run in a
transaction (``CREATE INDEX CONCURRENTLY``) are therefore not allowed in a
migration file.

Two processes migrating at once (two consumers starting together) are
serialised by a session-level advisory lock held for the whole run; the
second one waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

#: Advisory lock (two int4 keys, a key space apart from the one-bigint keys the
#: store uses per series) serialising migration runs: "dflo", 1.
MIGRATION_LOCK: tuple[int, int] = (0x64666C6F, 1)

_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, SQL text and checksum."""

    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text: detects a file edited after it was applied."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class AppliedMigration:
    """A row of ``schema_migrations``; ``modified`` when the file changed since."""

    version: str
    name: str
    checksum: str
    applied_at: datetime
    modified: bool


def available_migrations() -> list[Migration]:
    """The migration files shipped with the package, ordered by version.

    Raises:
        ValueError: a file in the folder does not follow ``NNNN_name.sql``, or
            two files share a version (a packaging mistake, caught by the tests).
    """
    folder = resources.files("dicomflow.store").joinpath("migrations")
    found: dict[str, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_RE.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_description.sql")
        version, name = match.groups()
        if version in found:
            raise ValueError(f"two migration files with version {version}: {found[version].name}, {name}")
        found[version] = Migration(version, name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _ensure_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version    varchar(16)  PRIMARY KEY,
            name       varchar(128) NOT NULL,
            checksum   char(64)     NOT NULL,
            applied_at timestamptz  NOT NULL DEFAULT now()
        )
        """
    )


def _applied_rows(conn: psycopg.Connection[Any]) -> list[tuple[str, str, str, datetime]]:
    rows = conn.execute(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [(str(v), str(n), str(c), a) for v, n, c, a in rows]


def applied_migrations(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """What ``schema_migrations`` records, each flagged when its file changed since.

    Returns an empty list on a database never migrated. ``conn`` must be in
    autocommit mode.
    """
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    files = {m.version: m for m in available_migrations()}
    result = []
    for version, name, checksum, applied_at in _applied_rows(conn):
        known = files.get(version)
        modified = known is not None and known.checksum != checksum
        result.append(AppliedMigration(version, name, checksum, applied_at, modified))
    return result


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    """Migration files not applied yet, in the order they would run."""
    done = {m.version for m in applied_migrations(conn)}
    return [m for m in available_migrations() if m.version not in done]


def migrate(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply every pending migration, in order, each in its own transaction.

    ``conn`` must be in autocommit mode (each file opens its own transaction).
    Concurrent callers on other connections wait on the advisory lock and
    then apply nothing.

    Returns:
        The versions applied by this call (empty when already up to date).

    Raises:
        psycopg.Error: a migration failed; it was rolled back, the versions
            before it stay applied. The caller wraps this in StoreError.
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs a connection in autocommit mode")
    conn.execute("SELECT pg_advisory_lock(%s, %s)", MIGRATION_LOCK)
    try:
        _ensure_table(conn)
        applied = {row[0]: row for row in _applied_rows(conn)}
        done: list[str] = []
        for migration in available_migrations():
            row = applied.get(migration.version)
            if row is not None:
                if row[2] != migration.checksum:
                    log.warning(
                        "migration %s_%s was edited after it was applied; the database keeps the old version",
                        migration.version, migration.name,
                    )
                continue
            _apply(conn, migration)
            done.append(migration.version)
        return done
    finally:
        # An unlock on a broken connection would raise over the real error;
        # the server drops session locks with the session anyway.
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", MIGRATION_LOCK)


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> None:
    """Run one file and record it, atomically."""
    log.info("applying migration %s_%s", migration.version, migration.name)
    with conn.transaction():
        # A file holds several statements: no parameters, so psycopg sends it
        # as one simple query. Its text is ours (package data), never input.
        conn.execute(migration.sql.encode("utf-8"))
        conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )


__all__ = [
    "MIGRATION_LOCK",
    "AppliedMigration",
    "Migration",
    "applied_migrations",
    "available_migrations",
    "migrate",
    "pending_migrations",
]
