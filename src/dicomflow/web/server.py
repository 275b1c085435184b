"""Running the DICOMweb app with uvicorn: one process, or several sharing one listening socket.

With ``workers > 1`` the parent binds the socket, then forks the workers
(each builds its own app, PostgreSQL pool and Kafka publisher after the
fork, in its lifespan) and only supervises them: SIGTERM / SIGINT are passed
on and the parent waits for every worker. The kernel spreads connections
over the workers accepting on the shared socket. The socket is made with
``proto=IPPROTO_TCP`` so that asyncio sets ``TCP_NODELAY`` on every accepted
connection (see :func:`listening_socket`). Prometheus metrics are per
worker process (a scrape sees the worker that answered it).

TLS: ``ssl_certfile`` / ``ssl_keyfile`` (and ``ssl_keyfile_password``,
``ssl_ca_certs``) are uvicorn's own options, passed through.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
from dataclasses import dataclass
from typing import Any

from dicomflow.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TLSOptions:
    certfile: str | None = None
    keyfile: str | None = None
    keyfile_password: str | None = None
    ca_certs: str | None = None


def _config(settings: Settings, tls: TLSOptions) -> Any:
    import uvicorn

    from dicomflow.web.app import create_app

    return uvicorn.Config(
        create_app(settings), host=settings.web.host, port=settings.web.port, log_level="warning",
        access_log=False, ssl_certfile=tls.certfile, ssl_keyfile=tls.keyfile,
        ssl_keyfile_password=tls.keyfile_password, ssl_ca_certs=tls.ca_certs, lifespan="on",
        timeout_graceful_shutdown=10,
    )


def _worker(settings: Settings, tls: TLSOptions, sock: socket.socket) -> None:
    import uvicorn

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns ^C into SIGTERM for each worker
    uvicorn.Server(_config(settings, tls)).run(sockets=[sock])


def listening_socket(host: str, port: int) -> socket.socket:
    """The TCP socket the worker processes share (bound, listening, inheritable).

    Made with ``proto=IPPROTO_TCP`` explicitly: asyncio turns Nagle off
    (``TCP_NODELAY``) only on accepted sockets whose proto is IPPROTO_TCP,
    and ``accept()`` copies the listening socket's. With proto 0 (what
    ``socket.socket(family, SOCK_STREAM)`` gives) every answer written as
    headers then body waited for the client's delayed ACK: 40-50 ms per
    request with ``--workers 2``, even ``/healthz``.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, tls: TLSOptions | None = None) -> None:
    """Serve until SIGTERM / SIGINT (blocking)."""
    import uvicorn

    tls = tls or TLSOptions()
    scheme = "https" if tls.certfile else "http"
    if settings.web.workers <= 1:
        log.info("DICOMweb listening on %s://%s:%d", scheme, settings.web.host, settings.web.port)
        uvicorn.Server(_config(settings, tls)).run()
        return
    sock = listening_socket(settings.web.host, settings.web.port)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_worker, args=(settings, tls, sock), name=f"dicomflow-web-{i}")
               for i in range(settings.web.workers)]
    for w in workers:
        w.start()
    log.info("DICOMweb listening on %s://%s:%d with %d worker processes", scheme, settings.web.host,
             settings.web.port, len(workers))

    def forward(signum: int, _frame: object) -> None:
        for w in workers:
            if w.pid is not None and w.is_alive():
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for w in workers:
        w.join()
    sock.close()
    failed = [w.name for w in workers if w.exitcode not in (0, -signal.SIGTERM)]
    if failed:
        log.error("worker(s) %s exited abnormally", ", ".join(failed))


__all__ = ["TLSOptions", "listening_socket", "serve"]
