"""Process and port helpers shared by the stack's services."""

from __future__ import annotations

import errno
import os
import signal
import socket
import time
from pathlib import Path

from dicomflow.errors import StackError


def pid_alive(pid: int | None) -> bool:
    """True if a process with this PID exists (and is not a zombie we could reap)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
        if status == "Z":
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            return False
    except (OSError, IndexError):
        pass
    return True


def read_pid(path: Path) -> int | None:
    """The PID stored in a pid file, or None if absent or unreadable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def ensure_port_free(port: int, what: str) -> None:
    """Refuse to start on a port that something else holds, with a clear message.

    Raises:
        StackError: naming the port and the service that wanted it.
    """
    if port_in_use(port):
        raise StackError(
            f"cannot start {what}: 127.0.0.1:{port} is already in use by another process; "
            f"choose another port (see `dicomflow config show`, section stack)"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the servers themselves bind (Java and PostgreSQL set SO_REUSEADDR): connections
        # left in TIME_WAIT by a killed server must not block its restart on the same port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StackError(f"cannot start {what}: 127.0.0.1:{port} is already taken") from exc
            raise


def wait_port(port: int, timeout_s: float, pid: int | None = None, what: str = "service") -> None:
    """Wait until ``port`` accepts connections, failing early if ``pid`` dies."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_in_use(port):
            return
        if pid is not None and not pid_alive(pid):
            raise StackError(f"{what} (PID {pid}) exited during start-up")
        time.sleep(0.2)
    raise StackError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")


def stop_pid(pid: int, timeout_s: float = 30.0) -> None:
    """SIGTERM one process we started, then SIGKILL if it will not go."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not pid_alive(pid):
            return
        time.sleep(0.1)


def kill_pid(pid: int, wait_s: float = 5.0) -> None:
    """SIGKILL one process we started (fault injection) and wait until it is gone."""
    if not pid_alive(pid):
        return
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
