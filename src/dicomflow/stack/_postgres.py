"""A local PostgreSQL server from Debian's packages, in a data directory of our own.

PostgreSQL refuses to run as root, so when we are root the data and socket
directories belong to the ``postgres`` system user (created by the Debian
package) and every server command runs through ``runuser``.
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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostgresStatus:
    running: bool
    pid: int | None
    address: str
    log_file: Path


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

    def start(self, timeout_s: float = 60.0) -> int:
        """Start the server if needed, then make sure the dicomflow role and database exist."""
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
            self._run(
                str(bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_file), "-w", "-t", str(int(timeout_s)),
                "-o", f"-p {self.port} -k {self.run_dir}", "start",
                what=f"pg_ctl start (log: {self.log_file})",
            )
            pid = self.pid()
            if not pid:
                raise StackError(f"PostgreSQL did not start; see {self.log_file}")
            log.info("PostgreSQL started, PID %s, 127.0.0.1:%s", pid, self.port)
        wait_port(self.port, timeout_s, pid, "PostgreSQL")
        self.ensure_database()
        return pid

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
