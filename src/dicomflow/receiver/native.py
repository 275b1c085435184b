"""The native engine's listeners: accept connections (or take them from the dispatcher), one thread each.

Each connection becomes an :class:`~dicomflow.receiver.acceptor.Association`
on its own thread; the engine keeps the set of open ones (for shutdown and
the dispatcher's counts), the negotiation and identity policies they share,
and, with ``[receiver.tls]``, the TLS context (on the main port, or on a
listener beside it).
"""

from __future__ import annotations

import logging
import selectors
import socket
import threading
from collections.abc import Iterable

from dicomflow.ingest.service import StoreService
from dicomflow.qr.retrieve import Retriever
from dicomflow.qr.service import FindService
from dicomflow.receiver.acceptor import Association
from dicomflow.receiver.events import AssociationEvents
from dicomflow.receiver.identity import IdentityPolicy
from dicomflow.receiver.limits import SlotLimiter
from dicomflow.receiver.negotiation import Negotiation
from dicomflow.receiver.tcp import prompt_acks, set_nodelay
from dicomflow.receiver.timed import TimedAssociation
from dicomflow.receiver.tls import ServerTls
from dicomflow.settings import ReceiverSettings

log = logging.getLogger(__name__)


class NativeEngine:
    """Accepts connections (or is handed them) and serves each association on its own thread."""

    def __init__(self, receiver: ReceiverSettings, service: StoreService, events: AssociationEvents, *,
                 limiter: SlotLimiter, listen: bool = True, finder: FindService | None = None,
                 retriever: Retriever | None = None) -> None:
        self.receiver = receiver
        self.service = service
        self.events = events
        #: Association slots shared with the receiver's other processes.
        self.limiter = limiter
        #: C-FIND on the index (receiver/find.py); None: C-FIND is not served.
        self.finder = finder
        #: C-GET / C-MOVE (receiver/retrieve.py, ``[qr] enabled``); None: their contexts are not accepted.
        self.retriever = retriever
        self.negotiation = Negotiation(receiver, service.ingestor.settings.supported_transfer_syntaxes,
                                       retrieve=retriever is not None)
        self.identity = IdentityPolicy(receiver)
        #: TLS (receiver.tls): on the main port when tls.port is 0, else on a listener of its own.
        self.tls = ServerTls(receiver.tls) if receiver.tls.enabled else None
        self.main_secure = self.tls is not None and receiver.tls.port == 0
        self.tls_listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._associations: set[Association] = set()
        self._stop = threading.Event()
        self._serving = threading.Event()
        self.listener: socket.socket | None = None
        self._address = (receiver.host, receiver.port)
        if listen:
            family = socket.AF_INET6 if ":" in receiver.host else socket.AF_INET
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((receiver.host, receiver.port))
            self.listener.listen(128)
            host, port = self.listener.getsockname()[:2]
            self._address = (str(host), int(port))
            if self.tls is not None and not self.main_secure:
                self.tls_listener = bind_listener(receiver.host, receiver.tls.port)

    @property
    def address(self) -> tuple[str, int]:
        return self._address

    def serve_forever(self) -> None:
        """Accept connections until :meth:`shutdown`."""
        if self.listener is None:
            raise RuntimeError("this engine does not listen; connections are handed to adopt()")
        self._serving.set()
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener, selectors.EVENT_READ, self.main_secure)
            if self.tls_listener is not None:
                selector.register(self.tls_listener, selectors.EVENT_READ, True)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.2):
                    try:
                        client, address = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:
                        continue
                    self.adopt(client, (str(address[0]), int(address[1])), secure=bool(key.data))
        self._serving.clear()

    @property
    def tls_address(self) -> tuple[str, int] | None:
        """The (host, port) of the TLS listener beside the plain one, if any."""
        if self.tls_listener is None:
            return None
        host, port = self.tls_listener.getsockname()[:2]
        return str(host), int(port)

    def adopt(self, client: socket.socket, address: tuple[str, int], *, secure: bool | None = None) -> None:
        """Serve a connection (accepted here or by the dispatcher) on a new thread.

        ``secure``: it came to a TLS listener (default: whatever the main port speaks).
        Acknowledgements are prompt whatever the sender's Nagle (:mod:`~dicomflow.receiver.tcp`).
        """
        client = prompt_acks(client)
        set_nodelay(client)
        secure = self.main_secure if secure is None else secure
        if secure and self.tls is None:
            log.error("a connection from %s came to a TLS port, but TLS is not configured; closing it", address[0])
            client.close()
            return
        stages = self.service.stages
        association = (Association(self, client, address, secure=secure) if stages is None
                       else TimedAssociation(self, client, address, secure=secure, stages=stages))
        with self._lock:
            self._associations.add(association)
        thread = threading.Thread(target=association.run, name=f"dicomflow-assoc-{address[0]}:{address[1]}",
                                  daemon=True)
        thread.start()

    def forget(self, association: Association) -> None:
        """An association ended (called by it, on its thread)."""
        with self._lock:
            self._associations.discard(association)

    def active_count(self) -> int:
        with self._lock:
            return len(self._associations)

    def active_associations(self) -> int:
        return self.active_count()

    def shutdown(self) -> None:
        """Stop accepting new connections (:meth:`serve_forever` returns)."""
        self._stop.set()

    def abort_all(self) -> None:
        for association in self._snapshot():
            log.warning("aborting association from %s still running at shutdown", association._who())
            association.abort()

    def _snapshot(self) -> Iterable[Association]:
        with self._lock:
            return list(self._associations)

    def close(self) -> None:
        self._stop.set()
        if self.listener is not None:
            self.listener.close()
        if self.tls_listener is not None:
            self.tls_listener.close()


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port).

    Raises:
        OSError: the port cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(128)
    return listener


__all__ = ["NativeEngine", "bind_listener"]
