"""``dicomflow scp``: run the C-STORE receiver until SIGTERM / Ctrl-C."""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
from collections.abc import Callable
from typing import Annotated, Any, Optional

import typer

from dicomflow.cli.root import settings_of
from dicomflow.settings import ReceiverSettings, Settings

log = logging.getLogger(__name__)


def scp(
    ctx: typer.Context,
    port: Annotated[Optional[int], typer.Option("--port", "-p", help="TCP port (default: receiver.port).")] = None,
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on (default: receiver.host).")] = None,
    ae_title: Annotated[Optional[str], typer.Option("--ae-title", "-a", help="Our AE title (default: receiver.ae_title).")] = None,
    processes: Annotated[
        Optional[int], typer.Option("--processes", "-j", help="Receiver processes behind the port (default: receiver.processes).")
    ] = None,
    allow: Annotated[
        Optional[list[str]],
        typer.Option("--allow", help="Calling AE title allowed to associate (repeat; default: receiver.allowed_calling_aes, empty = any)."),
    ] = None,
    no_fsync: Annotated[
        bool, typer.Option("--no-fsync", help="Do not fsync files (faster; a power cut may lose acknowledged instances).")
    ] = False,
    engine: Annotated[
        Optional[str], typer.Option("--engine", help="DICOM network layer: native or pynetdicom (default: receiver.engine).")
    ] = None,
    metrics_port: Annotated[
        Optional[int],
        typer.Option("--metrics-port", min=0, max=65535,
                     help="Serve /metrics and /healthz here (0: off; default: metrics.port)."),
    ] = None,
) -> None:
    """Receive instances over DICOM (C-STORE), store them and publish their store events.

    Every storage SOP class is accepted, in the transfer syntax the sender
    proposes. Success is answered only once the file is durably written and
    Kafka acknowledged its store event. C-FIND (Patient and Study Root) is
    answered from the index, within the calling AE's tenant (docs/qr.md).
    """
    from dicomflow.errors import DicomflowError

    settings = settings_of(ctx)
    changes: dict[str, Any] = {}
    for key, value in (("port", port), ("host", host), ("ae_title", ae_title), ("processes", processes)):
        if value is not None:
            changes[key] = value
    if allow:
        changes["allowed_calling_aes"] = tuple(allow)
    if engine is not None:
        if engine not in ("native", "pynetdicom"):
            raise typer.BadParameter("must be native or pynetdicom", param_hint="--engine")
        changes["engine"] = engine
    settings = dataclasses.replace(settings, receiver=dataclasses.replace(settings.receiver, **changes))
    if no_fsync:
        settings = dataclasses.replace(settings, ingest=dataclasses.replace(settings.ingest, fsync=False))
    if metrics_port is not None:
        settings = dataclasses.replace(settings, metrics=dataclasses.replace(settings.metrics, port=metrics_port))
    _check_options(settings.receiver)
    try:
        _run(settings)
    except DicomflowError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    except OSError as exc:
        rs = settings.receiver
        typer.echo(f"error: cannot listen on {rs.host}:{rs.port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from exc


def _check_options(rs: ReceiverSettings) -> None:
    """Range checks for the command-line overrides (the settings loader checked the rest)."""
    if not 0 < rs.port < 65536:
        raise typer.BadParameter(f"{rs.port} is not a TCP port", param_hint="--port")
    if rs.processes < 1:
        raise typer.BadParameter("must be at least 1", param_hint="--processes")
    if not rs.ae_title.strip() or len(rs.ae_title.encode()) > 16:
        raise typer.BadParameter("an AE title has 1-16 characters", param_hint="--ae-title")


def _run(settings: Settings) -> None:
    """Serve until a signal; signal handlers only set the stop flag."""
    from dicomflow.receiver.workers import quiet_pynetdicom

    level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    quiet_pynetdicom(str(level))
    stop = threading.Event()
    if settings.receiver.processes == 1:
        _run_single(settings, stop)
    else:
        _run_dispatcher(settings, stop, str(level))


def _install_signals(on_stop: Callable[[], None]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: on_stop())
    signal.signal(signal.SIGINT, lambda *_: on_stop())


def _observability(settings: Settings, registry: Any, listening: Callable[[], str | None]) -> tuple[Any, Any]:
    """The health object (listening, storage writable, Kafka reachable) and, with a metrics port, its server."""
    from dicomflow.kafka.admin import unreachable
    from dicomflow.metrics import Health, MetricsServer
    from dicomflow.metrics.receiver import storage_probe

    health = Health(max_poll_age_s=30.0)
    health.add_probe("listening", listening)
    health.add_probe("storage", storage_probe(settings.storage.root.resolve()))
    health.add_probe("kafka", lambda: unreachable(settings.kafka))
    server = None
    if settings.metrics.port:
        server = MetricsServer(settings.metrics.host, settings.metrics.port, registry, health).start()
    return health, server


def _run_single(settings: Settings, stop: threading.Event) -> None:
    from prometheus_client import CollectorRegistry

    from dicomflow.metrics.receiver import ReceiverMetrics
    from dicomflow.receiver.scp import Receiver

    registry = CollectorRegistry()
    receiver = Receiver(settings, metrics=ReceiverMetrics(registry))
    _install_signals(stop.set)
    receiver.start()
    host, port = receiver.address

    def listening() -> str | None:
        return None if receiver.serving() else "not accepting connections"

    health, server = _observability(settings, registry, listening)
    health.started()
    typer.echo(f"dicomflow scp {settings.receiver.ae_title} listening on {host}:{port} (Ctrl-C to stop)", err=True)
    try:
        while not stop.wait(1.0):
            health.beat()
    finally:
        log.info("stopping the receiver")
        health.stopped()
        if server is not None:
            server.stop()
        receiver.stop()


def _run_dispatcher(settings: Settings, stop: threading.Event, level: str) -> None:
    from dicomflow.audit import events as audit
    from dicomflow.kafka.producer import Publisher
    from dicomflow.receiver.workers import Dispatcher

    rs = settings.receiver
    dispatcher = Dispatcher(settings, rs.processes, log_level=level)
    _install_signals(dispatcher.stop)
    publisher = Publisher(settings.kafka, settings.topics, client_id=f"dicomflow-receiver-{settings.worker_node_id}")
    host, port = dispatcher.address

    def announce(started: bool) -> None:
        event = audit.application_activity(
            started=started, node_id=settings.worker_node_id, tenant_id=settings.storage.default_tenant,
            application="scp", ae_title=rs.ae_title, address=f"{host}:{port}",
        )
        result = publisher.send_audit([event], timeout_s=5.0)
        if not result.ok:
            log.warning("Application Activity audit event not acknowledged: %s", result.failures[0].reason)

    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(dispatcher.metrics_dir))  # type: ignore[no-untyped-call]

    def listening() -> str | None:
        ready = dispatcher.workers_ready()
        return None if ready == rs.processes else f"{ready} of {rs.processes} worker processes ready"

    health, server = _observability(settings, registry, listening)
    dispatcher.on_tick = health.beat
    try:
        dispatcher.start_workers()
        health.started()
        announce(True)
        typer.echo(
            f"dicomflow scp {rs.ae_title} listening on {host}:{port} with {rs.processes} processes (Ctrl-C to stop)",
            err=True,
        )
        dispatcher.serve_forever()
    finally:
        log.info("stopping the receiver processes")
        health.stopped()
        if server is not None:
            server.stop()
        dispatcher.close()
        announce(False)
        publisher.close()
