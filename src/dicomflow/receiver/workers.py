"""Several receiver processes behind one port.

One Python process serves its associations on one core at a time (the
interpreter lock): with pynetdicom that caps it near 200-300 instances/s,
with the native engine higher, but still one core. To use every core,
``receiver.processes > 1`` runs a small dispatcher and N worker processes:

- the dispatcher owns the listening socket, accepts each connection, sets
  TCP_NODELAY, and passes the connected socket (``SCM_RIGHTS``) to the worker
  with the fewest open associations (the worker's engine makes its reads
  acknowledge at once, in ``adopt``: :mod:`~dicomflow.receiver.tcp`);
- each worker runs a full :class:`~dicomflow.receiver.scp.Receiver` (its own
  Kafka producer, association threads, audit trail) that binds nothing and
  serves the sockets it is handed, and reports each closed association back.

Why not ``SO_REUSEPORT`` with N listeners: the kernel spreads connections by
a hash of the address pair, so four associations over two processes often
land three and one (or four and none); least-loaded dispatch keeps them
even. The dispatcher only accepts and forwards, so it is never the bottleneck.

A worker that dies is replaced; its associations are lost (their senders see
the connection drop and retry, nothing was acknowledged). The dispatcher
publishes Application Start / Stop once for the whole receiver.

Workers are started as ``python -m dicomflow.receiver.workers`` with the
settings in their environment (:func:`~dicomflow.settings.to_child_env`,
read back with :func:`~dicomflow.settings.from_child_env`) and the channel socket inherited as a file
descriptor.

Shared state lives in a temporary folder the dispatcher creates (and
removes): ``slots/``, the association slot files every worker locks
(:mod:`~dicomflow.receiver.limits`: ``receiver.max_associations`` holds for
the whole receiver, and a SIGKILLed worker's slots come back with its
death), and ``metrics/``, prometheus-client's multiprocess folder
(``PROMETHEUS_MULTIPROC_DIR`` in each worker's environment), which the
dispatcher's ``/metrics`` aggregates (:mod:`dicomflow.metrics.receiver`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicomflow.receiver.tcp import set_nodelay
from dicomflow.settings import Settings, from_child_env, to_child_env

log = logging.getLogger(__name__)

#: Byte a worker sends the dispatcher when one of its associations ends.
_CLOSED = b"-"
#: Byte a worker sends once its receiver is ready to serve.
_READY = b"+"
#: Seconds between two restarts of the same worker slot.
_RESTART_BACKOFF_S = 1.0


# --------------------------------------------------------------------------- dispatcher side


@dataclasses.dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    channel: socket.socket
    active: int = 0
    ready: bool = False
    started: float = dataclasses.field(default_factory=time.monotonic)


class Dispatcher:
    """Accepts connections on one port and hands each to the least-busy worker process.

    Raises:
        OSError: (constructor) the port cannot be bound.
    """

    def __init__(self, settings: Settings, processes: int, *, log_level: str = "INFO") -> None:
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.settings = settings
        self.processes = processes
        self.log_level = log_level
        rs = settings.receiver
        family = socket.AF_INET6 if ":" in rs.host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((rs.host, rs.port))
        self.listener.listen(128)
        self.listener.setblocking(False)
        self._workers: list[_Worker | None] = [None] * processes
        #: slot -> when its worker died (replaced after a short backoff)
        self._dead_since: dict[int, float] = {}
        self._selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._shared = tempfile.TemporaryDirectory(prefix="dicomflow-scp-")
        #: Association slot files shared by the workers.
        self.slots_dir = Path(self._shared.name) / "slots"
        #: prometheus-client multiprocess folder the workers write their samples to.
        self.metrics_dir = Path(self._shared.name) / "metrics"
        self.metrics_dir.mkdir()
        #: Called about once a second from :meth:`serve_forever` (the health endpoint's heartbeat).
        self.on_tick: Callable[[], None] | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start_workers(self) -> None:
        """Start every worker process (call once, before :meth:`serve_forever`)."""
        self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        for slot in range(self.processes):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = subprocess.Popen(
            [sys.executable, "-m", "dicomflow.receiver.workers", "--channel-fd", str(child_end.fileno()),
             "--slot", str(slot), "--log-level", self.log_level, "--slots-dir", str(self.slots_dir)],
            env={**to_child_env(self.settings, os.environ), "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)},
            pass_fds=(child_end.fileno(),),
        )
        child_end.close()
        worker = _Worker(slot, process, parent_end)
        self._workers[slot] = worker
        self._selector.register(parent_end, selectors.EVENT_READ, worker)
        log.info("receiver worker %d started (pid %d)", slot, process.pid)

    def serve_forever(self) -> None:
        """Accept and dispatch until :meth:`stop` is called (from a signal handler or thread)."""
        while not self._stop.is_set():
            if self.on_tick is not None:
                self.on_tick()
            for key, _ in self._selector.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    self._wake_r.recv(64)
                elif isinstance(key.data, _Worker):
                    self._from_worker(key.data)
            self._replace_dead()

    def _accept(self) -> None:
        while True:
            try:
                client, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            try:
                set_nodelay(client)
                self._hand_over(client, address)
            finally:
                client.close()  # the worker holds its own copy of the descriptor

    def _hand_over(self, client: socket.socket, address: tuple[str, int]) -> None:
        live = [w for w in self._workers if w is not None and w.process.poll() is None]
        if not live:
            log.error("no receiver worker alive; refusing a connection from %s", address[0])
            return
        worker = min(live, key=lambda w: (w.active, w.slot))
        payload = json.dumps([address[0], address[1]]).encode()
        try:
            socket.send_fds(worker.channel, [payload], [client.fileno()])
        except OSError as exc:
            log.error("could not hand a connection to worker %d: %s", worker.slot, exc)
            return
        worker.active += 1

    def _from_worker(self, worker: _Worker) -> None:
        try:
            data = worker.channel.recv(4096)
        except OSError:
            data = b""
        if data:
            worker.active = max(0, worker.active - data.count(_CLOSED))
            if _READY in data and not worker.ready:
                worker.ready = True
                if all(w is not None and w.ready for w in self._workers):
                    log.info("all %d receiver workers ready on %s:%d", self.processes, *self.address)
            return
        self._selector.unregister(worker.channel)
        worker.channel.close()
        code = worker.process.wait()
        _mark_dead(worker.process.pid, self.metrics_dir)
        if not self._stop.is_set():
            log.error("receiver worker %d (pid %d) exited with code %s; %d association(s) lost",
                      worker.slot, worker.process.pid, code, worker.active)
        self._workers[worker.slot] = None
        self._dead_since[worker.slot] = time.monotonic()

    def _replace_dead(self) -> None:
        if self._stop.is_set():
            return
        for slot, since in list(self._dead_since.items()):
            if time.monotonic() - since >= _RESTART_BACKOFF_S:
                del self._dead_since[slot]
                self._spawn(slot)

    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w is not None and w.process.poll() is None)

    def workers_ready(self) -> int:
        """Workers that reported their receiver serving (and are still alive)."""
        return sum(1 for w in self._workers if w is not None and w.ready and w.process.poll() is None)

    def stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler or another thread)."""
        self._stop.set()
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting, ask each worker to finish (SIGTERM), wait, then kill stragglers."""
        self._stop.set()
        try:
            self._selector.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        workers = [w for w in self._workers if w is not None]
        for w in workers:
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for w in workers:
            try:
                w.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("receiver worker %d did not stop in time; killing it", w.slot)
                w.process.kill()
                w.process.wait()
            w.channel.close()
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self._shared.cleanup()


def _mark_dead(pid: int, metrics_dir: Path) -> None:
    """Drop a dead worker's live gauges (associations open) from the aggregate (observer)."""
    try:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    except Exception as exc:  # noqa: BLE001 - metrics are observers
        log.debug("could not mark worker %d dead in the metrics: %s", pid, exc)


# --------------------------------------------------------------------------- worker side


def _receive_connections(channel: socket.socket, receiver: Any, stop: threading.Event) -> None:
    """Take connections from the dispatcher until it closes the channel or ``stop`` is set."""
    while not stop.is_set():
        try:
            payload, fds, _flags, _addr = socket.recv_fds(channel, 1024, 4)
        except OSError as exc:
            log.error("channel to the dispatcher failed: %s", exc)
            break
        if not payload and not fds:
            break  # dispatcher gone
        for fd in fds:
            client = socket.socket(fileno=fd)
            try:
                host, port = json.loads(payload.decode())
                address = (str(host), int(port))
            except (ValueError, TypeError):
                address = ("", 0)
            receiver.adopt(client, address)
    stop.set()


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of one worker process (``python -m dicomflow.receiver.workers``)."""
    parser = argparse.ArgumentParser(prog="dicomflow-receiver-worker")
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--slots-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [worker {args.slot}] %(name)s: %(message)s",
    )
    quiet_pynetdicom(args.log_level)
    settings = from_child_env(os.environ)
    settings = dataclasses.replace(settings, worker_node_id=f"{settings.worker_node_id}-{args.slot}")

    from prometheus_client import CollectorRegistry

    from dicomflow.metrics.receiver import ReceiverMetrics
    from dicomflow.receiver.scp import Receiver

    channel = socket.socket(fileno=args.channel_fd)
    # prometheus-client is in multiprocess mode here (the dispatcher set PROMETHEUS_MULTIPROC_DIR):
    # the samples go to files the dispatcher aggregates, whatever registry they are listed in.
    receiver = Receiver(settings, listen=False, slots_dir=args.slots_dir,
                        metrics=ReceiverMetrics(CollectorRegistry()))
    send_lock = threading.Lock()

    def report_closed() -> None:
        with send_lock:
            try:
                channel.sendall(_CLOSED)
            except OSError:
                pass

    def report_ready() -> None:
        with send_lock:
            try:
                channel.sendall(_READY)
            except OSError:
                pass

    receiver.on_connection_closed.append(report_closed)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    receiver.start(announce=False)
    report_ready()
    reader = threading.Thread(target=_receive_connections, args=(channel, receiver, stop), daemon=True)
    reader.start()
    stop.wait()
    receiver.stop(announce=False)
    channel.close()
    return 0


def quiet_pynetdicom(level: str) -> None:
    """pynetdicom logs every PDU at INFO; keep it to warnings unless DEBUG is asked for.

    Why: formatting those records costs more than storing the instance.
    """
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(worker_main())
