"""Start, SIGKILL and restart the component processes (receiver, consumer) by their PIDs.

Each component runs as ``python -m dicomflow.cli ...`` in a session of its
own, so it leads a process group: a SIGKILL goes to that group, and takes
the consumer's parse workers with it, as a crashed container would. Nothing
is ever signalled by name.

A watcher thread notices a component that exits without being told to (a
crash): it records the exit with the tail of the component's log and, if
asked to, starts the component again so the run can go on. The suite turns
every such exit into a failed check.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

#: Seconds between two looks at the components.
_WATCH_INTERVAL_S = 0.2


@dataclass(frozen=True)
class Exit:
    """A component process that ended, and whether the suite caused it."""

    component: str
    pid: int
    returncode: int
    at_s: float
    expected: bool
    why: str
    log_tail: str = ""


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/<pid>/task/*/children``); empty if gone."""
    out: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return out
    for task in tasks:
        try:
            out.extend(int(p) for p in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    seen: list[int] = []
    todo = [pid]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        todo.extend(child_pids(current))
    return seen


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port`` (a restarted receiver is up)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def rss_kib(pid: int) -> int | None:
    """Resident set size of one process in KiB (``VmRSS``), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Component:
    """One long-running ``dicomflow`` subcommand the suite may kill and restart."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path,
                 *, finite: bool = False, program: Sequence[str] | None = None) -> None:
        self.name = name
        #: What runs ``args``: the dicomflow CLI unless told otherwise.
        self.program = list(program) if program is not None else [sys.executable, "-m", "dicomflow.cli"]
        #: Runs until its work is done (``--until-idle``): exit code 0 is its normal end, not a crash.
        self.finite = finite
        self.args = list(args)
        self.env = dict(env)
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: Set while the suite itself is ending the process (kill / terminate).
        self._expect_exit = False

    @property
    def argv(self) -> list[str]:
        return [*self.program, *self.args]

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> int:
        """Start the process (appending to its log); return its PID.

        Raises:
            OSError: the interpreter could not be started.
        """
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== start #{self.starts + 1} at {time.strftime('%H:%M:%S')}: {' '.join(self.args)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        self.starts += 1
        self._expect_exit = False
        log.info("%s started, PID %s", self.name, self.proc.pid)
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> int | None:
        """SIGKILL the whole process group (fault injection); return the PID killed."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        self._expect_exit = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        return proc.pid

    def terminate(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM the component (a clean stop), SIGKILL its group if it will not go.

        Returns the exit code, or None if it was not running. A negative code
        means it had to be killed.
        """
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is not None:
            return proc.returncode
        self._expect_exit = True
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.error("%s (PID %s) ignored SIGTERM for %.0f s; killing it", self.name, proc.pid, timeout_s)
            self.kill()
            return -int(signal.SIGKILL)
        finally:
            self._reap_group(proc.pid)

    def wait(self, timeout_s: float) -> int | None:
        """Wait for the process to end by itself (``--until-idle``); None if it did not."""
        proc = self.proc
        if proc is None:
            return None
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self._expect_exit = True
        self._reap_group(proc.pid)
        return code

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Kill what is left of the group once its leader is gone (orphaned parse workers)."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def rss_kib(self) -> tuple[int, int] | None:
        """(main process RSS, RSS of the whole tree) in KiB, None if not running."""
        pid = self.pid
        if pid is None or not self.alive():
            return None
        main = rss_kib(pid)
        if main is None:
            return None
        total = sum(r for p in process_tree(pid) if (r := rss_kib(p)) is not None)
        return main, total

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Supervisor:
    """Watches components; records (and optionally repairs) exits the suite did not cause."""

    restart_crashed: bool = True
    started_at: float = field(default_factory=time.monotonic)
    components: dict[str, Component] = field(default_factory=dict)
    exits: list[Exit] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def add(self, component: Component) -> Component:
        self.components[component.name] = component
        return component

    def start_watching(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="faults-supervisor", daemon=True)
        self._thread.start()

    def elapsed(self) -> float:
        return time.monotonic() - self.started_at

    def kill(self, name: str) -> int | None:
        """SIGKILL one component (recorded as an expected exit)."""
        with self._lock:
            component = self.components[name]
            pid = component.kill()
            if pid is not None:
                self.exits.append(Exit(name, pid, -int(signal.SIGKILL), self.elapsed(), True, "SIGKILL by the suite"))
            return pid

    def restart(self, name: str) -> int:
        with self._lock:
            return self.components[name].start()

    def crashes(self) -> list[Exit]:
        with self._lock:
            return [e for e in self.exits if not e.expected]

    def _watch(self) -> None:
        while not self._stop.wait(_WATCH_INTERVAL_S):
            with self._lock:
                for component in self.components.values():
                    self._check(component)

    def _check(self, component: Component) -> None:
        proc = component.proc
        if proc is None or component._expect_exit:
            return
        code = proc.poll()
        if code is None:
            return
        if code == 0 and component.finite:
            component._expect_exit = True
            return
        tail = component.log_tail()
        self.exits.append(Exit(component.name, proc.pid, code, self.elapsed(), False, "exited by itself", tail))
        log.error("%s (PID %s) exited by itself with code %s; last log lines:\n%s", component.name, proc.pid, code, tail)
        component._reap_group(proc.pid)
        if self.restart_crashed:
            component.start()
        else:
            component._expect_exit = True

    def stop_watching(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def close(self) -> None:
        """Stop watching and SIGTERM every component still running."""
        self.stop_watching()
        for component in self.components.values():
            component.terminate(timeout_s=30.0)


def component_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The parent environment without any ``DICOMFLOW_*`` variable, plus ``extra``.

    Why: a developer's own ``DICOMFLOW_KAFKA_BROKERS`` (pointing at the shared
    stack) must never leak into a component of the private stack.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env["TCP_NODELAY"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


__all__ = ["Component", "Exit", "Supervisor", "child_pids", "component_env", "port_open", "process_tree", "rss_kib"]
