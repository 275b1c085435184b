"""Process and port helpers shared by the stack's services."""

from __future__ import annotations

import errno
import os
import random
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


#: The lowest port free_ports() picks: above the well-known and registered services most hosts run.
_FIRST_PRIVATE_PORT = 20000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (source ports of outgoing connections)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int, avoid: frozenset[int] = frozenset()) -> list[int]:
    """``count`` distinct ports on 127.0.0.1 that nothing holds now, none in ``avoid``.

    They are chosen below the kernel's ephemeral range: a port the kernel
    hands out with ``bind(0)`` is an ephemeral one, and any outgoing
    connection made before the service binds it (a Kafka client, a broker
    talking to its controller) can take it as its source port, so that the
    service dies at start-up with "address already in use". The sockets are
    held together while chosen, so no port repeats.

    Raises:
        StackError: fewer than ``count`` ports could be found.
    """
    low, high = _FIRST_PRIVATE_PORT, max(_ephemeral_low(), _FIRST_PRIVATE_PORT + 1000)
    candidates = [p for p in range(low, high) if p not in avoid]
    random.shuffle(candidates)
    held: list[socket.socket] = []
    try:
        for port in candidates:
            if len(held) == count:
                break
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            if port_in_use(port):  # something listens on another address of this port
                sock.close()
                continue
            held.append(sock)
        if len(held) < count:
            raise StackError(f"found only {len(held)} of {count} free ports in {low}-{high - 1} on 127.0.0.1")
        return [int(s.getsockname()[1]) for s in held]
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    """One free port on 127.0.0.1 outside the ephemeral range (see :func:`free_ports`)."""
    return free_ports(1)[0]


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, indented for an error message ('' if unreadable)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(fh.tell() - 16384, 0))
            tail = fh.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "".join(f"\n    {line}" for line in tail)


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
