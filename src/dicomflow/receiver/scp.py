"""The C-STORE SCP: one receiver process, its network engine, the store service and the audit trail.

A :class:`Receiver` owns, for one process: the Kafka
:class:`~dicomflow.kafka.producer.Publisher` shared by every association,
the :class:`~dicomflow.ingest.service.StoreService` (validate, write,
publish, answer), the audit tallies, and a network engine that speaks DICOM:

- ``native`` (default, :mod:`~dicomflow.receiver.acceptor`): dicomflow's own
  acceptor, a thread per association blocked in ``recv``;
- ``pynetdicom`` (:mod:`~dicomflow.receiver.pynetdicom_server`): pynetdicom's
  AE and threaded server.

For each C-STORE the service answers Success only once the file is durable
and Kafka acknowledged its store event and receipt; otherwise a failure
status with an Error Comment (``0xA700`` out of resources: retry later;
``0xA900`` / ``0xC000``: this instance cannot be accepted). A re-sent
instance is judged by ``ingest.duplicates`` (:mod:`~dicomflow.ingest.duplicates`):
the same content is a Success that publishes nothing; other content is
refused with ``0x0111`` by default (``reject``: the stored file stays), or
answered Success and kept (``keep``), or replaces the file with a new store
event (``replace``).

C-FIND is answered on the same associations by :class:`~dicomflow.qr.service.FindService`
(``[qr]``, docs/qr.md), within the calling AE's tenant.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from dicomflow.audit import events as audit
from dicomflow.ingest.ingestor import Ingestor
from dicomflow.ingest.journal import JOURNAL, Journal
from dicomflow.ingest.service import StoreService
from dicomflow.ingest.transfer_log import Peer, SessionKey, TransferLog
from dicomflow.kafka.producer import Publisher
from dicomflow.metrics.receiver import ReceiverMetrics
from dicomflow.metrics.stages import StageTimer
from dicomflow.models import AuditEvent
from dicomflow.qr.service import FindService
from dicomflow.receiver.limits import SlotLimiter
from dicomflow.receiver.reception import clear_incoming
from dicomflow.settings import Settings

if TYPE_CHECKING:
    from dicomflow.qr.retrieve import Retriever
    from dicomflow.receiver.pynetdicom_server import PynetdicomEngine

log = logging.getLogger(__name__)

#: Seconds :meth:`Receiver.stop` lets running associations finish before aborting them.
STOP_GRACE_S = 10.0
#: Seconds an audit publication may take (it happens after the connection closed).
AUDIT_TIMEOUT_S = 5.0


class Engine(Protocol):
    """The network layer a receiver drives (native acceptor or pynetdicom)."""

    @property
    def address(self) -> tuple[str, int]: ...

    def serve_forever(self) -> None: ...

    def shutdown(self) -> None: ...

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None: ...

    def active_associations(self) -> int: ...

    def abort_all(self) -> None: ...

    def close(self) -> None: ...


class Receiver:
    """One receiver process (see the module documentation).

    ``publisher`` may be shared (tests, a host application); when omitted the
    receiver builds its own with ``receiver.kafka_linger_ms`` and closes it
    in :meth:`stop`. With ``listen=False`` nothing is bound: connections are
    handed in with :meth:`adopt` (the multi-process dispatcher does that).

    Raises:
        ConfigError: (constructor) a tenant setting is invalid or the Kafka
            client rejects its configuration.
        OSError: (constructor) the port cannot be bound.
    """

    def __init__(self, settings: Settings, *, publisher: Publisher | None = None, listen: bool = True,
                 slots_dir: Path | None = None, metrics: ReceiverMetrics | None = None) -> None:
        self.settings = settings
        rs = settings.receiver
        self._owns_publisher = publisher is None
        self.publisher = publisher or Publisher(
            dataclasses.replace(settings.kafka, linger_ms=rs.kafka_linger_ms), settings.topics,
            client_id=f"dicomflow-receiver-{settings.worker_node_id}",
        )
        self.ingestor = Ingestor(settings.storage, settings.ingest, settings.worker_node_id)
        self.ingestor.root.mkdir(parents=True, exist_ok=True)
        clear_incoming(self.ingestor.local_root)  # the storage root, or the S3 backend's spool
        #: Observer: the receiver's Prometheus metrics (None: not collected).
        self.metrics = metrics
        #: Association slots: in ``slots_dir`` shared with the other processes of the receiver, else private.
        self._own_slots: tempfile.TemporaryDirectory[str] | None = None
        if slots_dir is None:
            self._own_slots = tempfile.TemporaryDirectory(prefix="dicomflow-slots-")
            slots_dir = Path(self._own_slots.name)
        self.limiter = SlotLimiter(slots_dir, rs.max_associations, rs.max_associations_per_ae)
        self.transfers = TransferLog(settings.worker_node_id, self._emit_audit)
        #: Observer: per-stage times of each instance (receiver.stage_timing_dir; None: off).
        self.stages = StageTimer(rs.stage_timing_dir) if rs.stage_timing_dir is not None else None
        #: receiver.ack = "journal": the local journal; its orphaned records are queued for Kafka before any association.
        self.journal = (Journal(self.ingestor.local_root / JOURNAL, self.publisher, fsync=self.ingestor.fsync,
                                publish_timeout_s=rs.publish_timeout_s,
                                sync_file_system=rs.journal_sync == "filesystem") if rs.ack == "journal" else None)
        self.service = StoreService(self.ingestor, self.publisher, self.transfers, publish_timeout_s=rs.publish_timeout_s,
                                    metrics=metrics, stages=self.stages, journal=self.journal)
        #: C-FIND on the index ([qr], docs/qr.md): its connections open on the first query.
        self.finder = FindService(settings.qr, settings.database, ae_title=rs.ae_title,
                                  node_id=settings.worker_node_id, audit=self._emit_audit)
        #: Called after every connection ends, however it ended (the dispatcher counts on it).
        self.on_connection_closed: list[Callable[[], None]] = []
        self.engine: Engine
        if rs.engine == "pynetdicom":
            from dicomflow.receiver.pynetdicom_server import PynetdicomEngine

            self.engine = PynetdicomEngine(rs, self.service, self, listen=listen, finder=self.finder)
            self._offer_retrieve(self.engine)
        else:
            from dicomflow.receiver.native import NativeEngine

            self.engine = NativeEngine(rs, self.service, self, limiter=self.limiter, listen=listen, finder=self.finder,
                                       retriever=self._retriever())
        self._listen = listen
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _retriever(self) -> Retriever | None:
        """C-MOVE / C-GET on the index when ``[qr] enabled`` (docs/qr.md), for either engine.

        Raises:
            ConfigError: a ``[qr.destinations]`` entry is not ``host:port``.
        """
        if not self.settings.qr.enabled:
            return None
        from dicomflow.qr.retrieve import Retriever

        return Retriever(self.settings, self.ingestor.tenants, self._emit_audit)

    def _offer_retrieve(self, engine: PynetdicomEngine) -> None:
        """C-MOVE / C-GET on the pynetdicom engine: its contexts and handlers (qr/serve.py)."""
        retriever = self._retriever()
        if retriever is None:
            return
        from dicomflow.qr.serve import offer_retrieve

        servers = [s for s in (engine.server, engine.tls_server) if s is not None]
        offer_retrieve(engine.ae, servers, retriever)

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) the server listens on (the real port when 0 was asked)."""
        return self.engine.address

    def start(self, *, announce: bool = True) -> None:
        """Serve in a background thread; publish Application Start unless ``announce`` is False."""
        if self._listen:
            self._thread = threading.Thread(target=self.engine.serve_forever, name="dicomflow-scp", daemon=True)
            self._thread.start()
            host, port = self.address
            log.info("DICOM receiver %s (%s engine) listening on %s:%d, storing under %s",
                     self.settings.receiver.ae_title, self.settings.receiver.engine, host, port, self.ingestor.root)
        if announce:
            self.announce(started=True)

    def adopt(self, client: socket.socket, address: tuple[str, int]) -> None:
        """Serve a connection accepted by the dispatcher (multi-process mode)."""
        self.engine.adopt(client, address)

    def active_associations(self) -> int:
        return self.engine.active_associations()

    def serving(self) -> bool:
        """True while connections are accepted (the listening thread runs; or adopted ones, until stopped)."""
        if self._stopped:
            return False
        return not self._listen or (self._thread is not None and self._thread.is_alive())

    def stop(self, *, grace_s: float = STOP_GRACE_S, announce: bool = True) -> None:
        """Stop accepting, let running associations finish (abort them after ``grace_s``), flush, close.

        Idempotent. Publishes Application Stop unless ``announce`` is False.
        """
        if self._stopped:
            return
        self._stopped = True
        if self._thread is not None:
            self.engine.shutdown()
            self._thread.join(5.0)
        deadline = time.monotonic() + grace_s
        while self.engine.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.engine.abort_all()
        deadline = time.monotonic() + 5.0
        while self.engine.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.engine.close()
        self.service.close()
        self._write_stages()
        self.finder.close()
        self.limiter.close()
        if self._own_slots is not None:
            self._own_slots.cleanup()
        if announce:
            self.announce(started=False)
        if self._owns_publisher:
            self.publisher.close()

    def _write_stages(self) -> None:
        """The per-stage times, when collected (an observer: a failure is logged, never raised)."""
        if self.stages is None:
            return
        try:
            path = self.stages.write()
        except OSError as exc:
            log.warning("could not write the stage timings to %s: %s", self.stages.folder, exc.strerror or exc)
            return
        log.info("stage timings of %d instances written to %s", len(self.stages.records()), path)

    # ------------------------------------------------------------------ association events

    def established(self, session: SessionKey, peer: Peer) -> None:
        """An association was accepted: start counting what it transfers."""
        self.transfers.opened(session, peer)
        if self.metrics is not None:
            self.metrics.accepted.inc()
            self.metrics.open.inc()
        log.info("association from %s (%s) established", peer.calling_ae, peer.calling_address)

    def closed(self, session: SessionKey, peer: Peer | None) -> None:
        """A connection ended: emit its audit events, tell the dispatcher."""
        stored, refused = self.transfers.closed(session)
        if peer is not None and self.metrics is not None:
            self.metrics.open.dec()
        if peer is not None and (stored or refused):
            log.info("association from %s (%s) closed: %d instance(s) stored, %d refused",
                     peer.calling_ae, peer.calling_address, stored, refused)
        for callback in self.on_connection_closed:
            try:
                callback()
            except Exception:
                log.exception("connection-closed callback failed")

    def aborted(self, session: SessionKey, kind: str) -> None:
        """We aborted an association (protocol error, timeout, data set too large): counted."""
        if self.metrics is not None:
            self.metrics.rejected_for(kind)

    def rejected(self, peer: Peer, reason: str, kind: str = "other") -> None:
        """Audit an association refused: a User Authentication (Login) failure."""
        if self.metrics is not None:
            self.metrics.rejected_for(kind)
        log.warning("refused an association from %s (%s): %s", peer.calling_ae, peer.calling_address, reason)
        tenant = self.ingestor.tenants.resolve(None, peer.calling_ae)
        self._emit_audit([audit.association_rejected(
            node_id=self.settings.worker_node_id, tenant_id=tenant, calling_ae=peer.calling_ae,
            calling_address=peer.calling_address, called_ae=peer.called_ae, called_address=peer.called_address,
            reason=reason, user=peer.user,
        )])

    def tls_refused(self, peer_address: str, reason: str, kind: str) -> None:
        """Audit a connection refused by TLS: a Security Alert (110113), Node Authentication (110126)."""
        log.warning("refused a connection from %s on the TLS port: %s", peer_address, reason)
        host, _port = self.address
        self._emit_audit([audit.security_alert(
            node_id=self.settings.worker_node_id, tenant_id=self.ingestor.tenants.default,
            peer_address=peer_address or None, reason=reason, kind=kind,
            ae_title=self.settings.receiver.ae_title, local_address=host,
        )])

    # ------------------------------------------------------------------ audit

    def announce(self, *, started: bool) -> None:
        """Application Activity (110100): start or stop of this receiver."""
        rs = self.settings.receiver
        host, port = self.address
        self._emit_audit([audit.application_activity(
            started=started, node_id=self.settings.worker_node_id, tenant_id=self.ingestor.tenants.default,
            application="scp", ae_title=rs.ae_title, address=f"{host}:{port}",
        )])

    def _emit_audit(self, events: Sequence[AuditEvent]) -> None:
        """Publish audit events and wait briefly; failures are logged, never raised (observer)."""
        try:
            result = self.publisher.send_audit(events, timeout_s=AUDIT_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - auditing must not break receiving
            log.warning("could not publish %d audit event(s): %s", len(events), exc)
            return
        if not result.ok:
            log.warning("%d of %d audit event(s) not acknowledged: %s",
                        len(result.failures), len(events), result.failures[0].reason)


__all__ = ["Engine", "Receiver"]
