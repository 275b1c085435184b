"""A local PostgreSQL server from Debian's packages, in a data directory of our own.

PostgreSQL refuses to run as root, so when we are root the data and socket
directories belong to the ``postgres`` system user (created by the Debian
package) and every server command runs through ``runuser``.

``start(secure=True)`` (``dicomflow stack up --secure``) runs the server with
TLS: a server certificate for 127.0.0.1 and localhost, signed by the stack's
test CA (:class:`~dicomflow.stack._tls.TestCA`, ``<stack dir>/tls/ca.pem``),
generated at start and never committed; TCP connections must then use TLS
(``hostssl`` in ``pg_hba.conf``), so clients connect with
``sslmode=verify-full`` and ``sslrootcert`` = the CA (:meth:`PostgresServer.client_settings`).
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import StackError
from dicomflow.settings import DatabaseSettings, StackSettings
from dicomflow.stack._proc import ensure_port_free, kill_pid, pid_alive, read_pid, wait_port
from dicomflow.stack._tls import TestCA

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostgresStatus:
    running: bool
    pid: int | None
    address: str
    log_file: Path


#: Client authentication: trust on the private unix socket (the stack's own admin connection),
#: passwords over TCP; ``{host}`` is ``hostssl`` when the server runs with TLS (plain TCP refused).
_PG_HBA = """# written by dicomflow's local stack at each start
local   all          all                     trust
local   replication  all                     trust
{host}  all          all     127.0.0.1/32    scram-sha-256
{host}  all          all     ::1/128         scram-sha-256
{host}  replication  all     127.0.0.1/32    scram-sha-256
"""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name) or ["0"])


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, if any."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: _version_key(p.parent))
    return candidates[-1].parent if candidates else None


def install_postgres() -> Path:
    """Install Debian's ``postgresql`` package when the server binaries are missing.

    Raises:
        StackError: not root, or apt-get failed.
    """
    found = find_bin_dir()
    if found:
        return found
    if os.geteuid() != 0:
        raise StackError("PostgreSQL server binaries are missing; install Debian's `postgresql` package (needs root)")
    log.info("installing PostgreSQL from Debian's packages")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise StackError(f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr).strip()[-1500:]}")
    found = find_bin_dir()
    if not found:
        raise StackError("apt-get installed postgresql but no initdb was found under /usr/lib/postgresql")
    return found


def _reachable_by_others(path: Path) -> bool:
    """True when every existing ancestor of ``path`` is searchable by other users."""
    return all(not (part.exists() and not part.stat().st_mode & 0o001) for part in [path, *path.parents])


class PostgresServer:
    """initdb, start, stop and report one PostgreSQL cluster bound to 127.0.0.1."""

    def __init__(self, settings: StackSettings, database: DatabaseSettings) -> None:
        self.settings = settings
        self.database = database
        self.home = self._choose_home(settings.dir.resolve())
        self.data = self.home / "data"
        self.run_dir = self.home / "run"
        self.log_file = self.home / "postgres.log"
        #: The server's TLS certificate and key (copies owned by the server's user).
        self.tls_dir = self.home / "tls"
        self.ca = TestCA(settings.dir.resolve() / "tls")

    def _choose_home(self, stack_dir: Path) -> Path:
        """``<stack dir>/postgres``, unless the server's user cannot reach it.

        Why: a checkout under a private directory (mode 700, e.g. from mktemp)
        is closed to the ``postgres`` user; the cluster then lives in
        ``/var/tmp/dicomflow-<hash>/postgres`` instead, one per stack directory.
        """
        home = stack_dir / "postgres"
        if os.geteuid() != 0 or _reachable_by_others(stack_dir):
            return home
        import hashlib

        digest = hashlib.sha1(str(stack_dir).encode(), usedforsecurity=False).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"dicomflow-{digest}"
        fallback.mkdir(mode=0o755, exist_ok=True)
        return fallback / "postgres"

    @property
    def port(self) -> int:
        return self.settings.postgres_port

    # ------------------------------------------------------------------ user

    def _run_user(self) -> str | None:
        """The system user that owns the cluster: ``postgres`` when we are root."""
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError as exc:
            raise StackError("running as root but there is no `postgres` user to run the server as") from exc
        return "postgres"

    def _cmd(self, *args: str) -> list[str]:
        user = self._run_user()
        return ["runuser", "-u", user, "--", *args] if user else list(args)

    def _run(self, *args: str, what: str) -> str:
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True, check=False, cwd="/")
        if proc.returncode != 0:
            raise StackError(f"{what} failed: {(proc.stdout + proc.stderr).strip()[-1500:]}")
        return proc.stdout

    def _own(self, path: Path) -> None:
        user = self._run_user()
        if user:
            pw = pwd.getpwnam(user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    # ------------------------------------------------------------------ lifecycle

    def _initdb(self, bin_dir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.home.mkdir(parents=True, exist_ok=True)
        os.chmod(self.home, 0o755)
        for d in (self.data, self.run_dir):
            d.mkdir(parents=True, exist_ok=True)
            self._own(d)
        os.chmod(self.data, 0o700)
        self._run(
            str(bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256",
            what=f"initdb in {self.data}",
        )
        conf = self.data / "postgresql.conf"
        with conf.open("a") as fh:
            fh.write(
                "\n# dicomflow local stack\n"
                "listen_addresses = '127.0.0.1'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.run_dir}'\n"
                "max_connections = 200\n"
                "shared_buffers = 256MB\n"
                "wal_buffers = 16MB\n"
                "checkpoint_timeout = 15min\n"
                "max_wal_size = 2GB\n"
                "logging_collector = off\n"
            )

    def pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid_alive(pid) else None

    def start(self, timeout_s: float = 60.0, *, secure: bool = False) -> int:
        """Start the server if needed, then make sure the dicomflow role and database exist.

        ``secure``: with TLS, and TLS required on TCP (``stack up --secure``).
        A server already running is left as it is, but must match: one
        running without TLS when TLS is asked for is an error, not a silent
        downgrade.

        Raises:
            StackError: the server cannot be installed or started, or runs without TLS when ``secure``.
        """
        bin_dir = install_postgres()
        pid = self.pid()
        if not pid:
            self._initdb(bin_dir)
            ensure_port_free(self.port, "PostgreSQL")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._own(self.run_dir)
            if not self.log_file.exists():
                self.log_file.touch()
            self._own(self.log_file)
            options = f"-p {self.port} -k {self.run_dir}"
            if secure:
                cert, key = self._install_certificate()
                options += f" -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} -c ssl_min_protocol_version=TLSv1.2"
            self._write_hba(secure)
            self._run(
                str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", str(int(timeout_s)),
                "-o", options, "start",
                what=f"pg_ctl start (log: {self.log_file})",
            )
            pid = self.pid()
            if not pid:
                raise StackError(f"PostgreSQL did not start; see {self.log_file}")
            log.info("PostgreSQL started, PID %s, 127.0.0.1:%s%s", pid, self.port, " with TLS" if secure else "")
        wait_port(self.port, timeout_s, pid, "PostgreSQL")
        if secure and not self.tls_enabled():
            raise StackError(f"PostgreSQL at 127.0.0.1:{self.port} already runs without TLS; "
                             "stop it (dicomflow stack down) and start it again with --secure")
        self.ensure_database()
        return pid

    def _install_certificate(self) -> tuple[Path, Path]:
        """The server certificate (from the stack's CA) copied where the server's user owns it, key 0600."""
        issued = self.ca.issue("postgres", ("127.0.0.1", "localhost"))
        self.tls_dir.mkdir(parents=True, exist_ok=True)
        self._own(self.tls_dir)
        os.chmod(self.tls_dir, 0o700)
        cert, key = self.tls_dir / "server.crt", self.tls_dir / "server.key"
        for src, dst, mode in ((issued.cert, cert, 0o644), (issued.key, key, 0o600)):
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(src.read_bytes())
            os.chmod(dst, mode)
            self._own(dst)
        return cert, key

    def _write_hba(self, secure: bool) -> None:
        hba = self.data / "pg_hba.conf"
        hba.write_text(_PG_HBA.format(host="hostssl" if secure else "host   "))
        os.chmod(hba, 0o600)
        self._own(hba)

    def tls_enabled(self) -> bool:
        """Whether the running server has TLS on (asked over the private socket)."""
        import psycopg

        try:
            with psycopg.connect(self.admin_conninfo(), autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SHOW ssl").fetchone()
        except psycopg.Error as exc:
            raise StackError(f"cannot ask the local PostgreSQL whether TLS is on: {exc}") from exc
        return row is not None and row[0] == "on"

    def client_settings(self, secure: bool = True) -> DatabaseSettings:
        """The database settings a client uses for this server: with ``secure``, verify-full against the stack's CA."""
        import dataclasses

        db = dataclasses.replace(self.database, host="127.0.0.1", port=self.port)
        if not secure:
            return db
        return dataclasses.replace(db, sslmode="verify-full", sslrootcert=str(self.ca.cert_file))

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """Superuser connection over the private unix socket (trust auth, local only)."""
        return f"host={self.run_dir} port={self.port} user=postgres dbname={dbname}"

    def ensure_database(self) -> None:
        """Create the dicomflow role and database when missing (idempotent)."""
        import psycopg
        from psycopg import sql

        db = self.database
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = psycopg.connect(self.admin_conninfo(), autocommit=True, connect_timeout=5)
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise StackError(f"cannot connect to the local PostgreSQL as superuser: {exc}") from exc
                time.sleep(0.3)
        with conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (db.user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(db.user), sql.Literal(db.password))
            )
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db.dbname,)).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(db.dbname), sql.Identifier(db.user)))

    def stop(self, mode: str = "fast") -> None:
        """Stop the server with ``pg_ctl stop`` (waits for it to exit)."""
        if not self.pid():
            return
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise StackError("PostgreSQL is running but pg_ctl was not found")
        self._run(str(bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", what="pg_ctl stop")

    def kill(self) -> None:
        """SIGKILL the postmaster (fault injection): the next start runs crash recovery."""
        pid = self.pid()
        if pid:
            kill_pid(pid)
            # Orphaned backends keep the shared memory; they exit once the postmaster is gone.
            time.sleep(0.5)

    def status(self) -> PostgresStatus:
        pid = self.pid()
        return PostgresStatus(running=pid is not None, pid=pid, address=f"127.0.0.1:{self.port}", log_file=self.log_file)


__all__ = ["PostgresServer", "find_bin_dir", "install_postgres"]
