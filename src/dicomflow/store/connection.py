"""The store's one PostgreSQL connection: opened on first use, retried, errors classified.

Connection loss (a server restart, a terminated backend, a network cut) is
noticed on first use: :meth:`StoreConnection.run` reconnects once and runs
the operation on the new connection, then gives up with a transient
:class:`~dicomflow.errors.StoreError`; the next call reconnects by itself.
A deadlock or serialization failure is retried with jittered backoff. A
value PostgreSQL refuses is :class:`~dicomflow.store.exceptions.StoreDataError`
(poison); every other failure is a transient ``StoreError``. This is the one
place that decides which is which, by psycopg's SQLSTATE classes, never by
message text.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from dicomflow.errors import StoreError
from dicomflow.settings import DatabaseSettings
from dicomflow.store.exceptions import StoreDataError
from dicomflow.store.session import Session, prepare_session

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Tries:
    """How far :meth:`StoreConnection.run` got with one operation."""

    attempt: int = 0
    reconnected: bool = False  # the one retry on a new connection after a lost one is used up
    refreshed: bool = False  # the one retry on a new session after a refused value is used up


class StoreConnection:
    """One reused connection, the session prepared on it, and the retry policy.

    Not thread-safe: the store serialises calls.
    """

    def __init__(self, db: DatabaseSettings, *, max_attempts: int = 5) -> None:
        self._db = db
        self._max_attempts = max_attempts
        self._conn: psycopg.Connection[Any] | None = None
        self._session: Session | None = None

    @property
    def where(self) -> str:
        """``host:port/dbname`` of the database, for messages (never the password)."""
        try:
            params = conninfo_to_dict(self._db.conninfo())
        except psycopg.ProgrammingError:
            return "<invalid dsn>"
        return f"{params.get('host', '')}:{params.get('port', '')}/{params.get('dbname', '')}"

    def backend_pid(self) -> int | None:
        """PID of the server process behind the current connection (None before the first call)."""
        conn = self._conn
        if conn is None or conn.closed:
            return None
        return conn.info.backend_pid

    def session(self, conn: psycopg.Connection[Any]) -> Session:
        """The temp tables and statements of ``conn``, prepared on its first batch.

        Raises:
            StoreError: the schema is older than the models.
            psycopg.errors.UndefinedTable: the schema is missing (classified by :meth:`run`).
        """
        session = self._session
        if session is None:
            session = self._session = prepare_session(conn)
        return session

    def discard(self) -> None:
        """Close the connection (if any) and forget its session; the next call reconnects."""
        conn, self._conn = self._conn, None
        self._session = None
        if conn is not None and not conn.closed:
            try:
                conn.close()
            except psycopg.Error:  # already gone: nothing left to release
                pass

    def run(self, what: str, op: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``op`` (one transaction or read) with the store's retry policy.

        - deadlock / serialization failure: retried up to ``max_attempts``
          with jittered backoff (the transaction was rolled back);
        - connection lost on a connection reused from an earlier call: one
          retry on a new connection (a restarted server or an idle backend
          that was terminated is only noticed on use);
        - a refused value: :class:`StoreDataError`; retried once on a new
          session if the session was prepared by an earlier call, because
          the tables may have been migrated since (by another process) and
          the temp tables still have the old column types;
        - anything else: :class:`StoreError`.
        """
        tries = _Tries()
        while True:
            tries.attempt += 1
            reused = self._conn is not None and not (self._conn.closed or self._conn.broken)
            conn = self._connect()
            stale = self._session is not None
            try:
                return op(conn)
            except (StoreError, psycopg.Error) as exc:
                lost = conn.closed or conn.broken
                self._after_error(conn)
                self._retry_or_raise(what, exc, tries, lost=lost, reused=reused, stale=stale)

    def _retry_or_raise(self, what: str, exc: StoreError | psycopg.Error, tries: _Tries, *,
                        lost: bool, reused: bool, stale: bool) -> None:
        """The policy of :meth:`run` for one failure: return to try again (after any backoff), or raise."""
        if isinstance(exc, StoreDataError):
            if stale and not tries.refreshed:
                tries.refreshed = True
                log.info("%s: %s; retrying once on a new session in case the schema changed", what, exc)
                self.discard()
                return
            raise exc
        if isinstance(exc, pg_errors.TransactionRollback):  # 40001, 40P01 ... (before OperationalError, its base)
            if tries.attempt >= self._max_attempts:
                raise StoreError(f"{what} failed after {tries.attempt} attempts: {first_line(exc)}") from exc
            delay = min(0.5, 0.02 * 2**tries.attempt) * random.uniform(0.5, 1.5)
            log.warning("%s: %s (%s), retrying in %.0f ms", what, type(exc).__name__, exc.sqlstate, delay * 1000)
            time.sleep(delay)
            return
        if isinstance(exc, StoreError):  # a schema older than the models
            raise exc
        if isinstance(exc, (psycopg.DataError, psycopg.IntegrityError)):
            raise StoreDataError(f"{what}: PostgreSQL refused a value: {first_line(exc)}", sqlstate=exc.sqlstate) from exc
        if isinstance(exc, psycopg.OperationalError):
            if lost and reused and not tries.reconnected:
                tries.reconnected = True
                log.warning("%s: connection to %s lost (%s); reconnecting", what, self.where, first_line(exc))
                return
            raise StoreError(f"{what} at {self.where} failed: {first_line(exc)}") from exc
        if isinstance(exc, pg_errors.UndefinedTable):
            raise StoreError(f"{what}: the schema is missing ({first_line(exc)}); run `dicomflow db migrate`") from exc
        raise StoreError(f"{what} at {self.where} failed: {first_line(exc)}") from exc

    def _connect(self) -> psycopg.Connection[Any]:
        """The reused connection, opened when missing or broken.

        Raises:
            StoreError: the server cannot be reached or refuses us.
        """
        conn = self._conn
        if conn is not None and (
            conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE
        ):
            # Broken, or left inside a transaction by an interrupted call.
            self.discard()
            conn = None
        if conn is None:
            try:
                conn = psycopg.connect(self._db.conninfo(), autocommit=True)
            except psycopg.Error as exc:
                raise StoreError(f"cannot connect to PostgreSQL at {self.where}: {first_line(exc)}{self._tls_hint()}") from exc
            self._conn = conn
            self._session = None
            log.debug("connected to PostgreSQL at %s, backend %s", self.where, conn.info.backend_pid)
        return conn

    def _tls_hint(self) -> str:
        """What the TLS settings were, for a connection error (the server's answer says what failed)."""
        db = self._db
        if db.sslmode in ("verify-ca", "verify-full"):
            return (f" (TLS sslmode={db.sslmode}: the server's certificate must chain to "
                    f"database.sslrootcert={db.sslrootcert or '~/.postgresql/root.crt'}"
                    + (" and be issued for the host name" if db.sslmode == "verify-full" else "") + ")")
        return ""

    def _after_error(self, conn: psycopg.Connection[Any]) -> None:
        """Drop a connection that is broken or left inside a transaction."""
        if conn.closed or conn.broken or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.discard()


def first_line(exc: BaseException) -> str:
    """The primary message only: a COPY error's CONTEXT quotes the refused value (maybe a patient name)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["StoreConnection", "first_line"]
