"""A C-STORE sender that behaves like a modality: it retries until each instance is acknowledged.

Several associations send in parallel from a shared queue of files. An
instance counts as *acknowledged* only when the receiver answered a Success
(``0x0000``) or Warning (``0xB000``, ``0xB006``, ``0xB007``: stored, with
coercion or elements discarded) status: that is the receiver's promise that
the instance will be indexed, and what the suite checks against PostgreSQL.

Anything else is retried later, after a short pause, as a modality does:
a failure status (Kafka down: "out of resources"), an empty response (the
association was aborted or timed out, e.g. the receiver was SIGKILLed
mid-store: the instance may or may not have been stored), a refused
connection (the receiver is restarting). A retried instance that was in
fact stored the first time is simply stored again; the receiver overwrites
the file and the consumer upserts the same row.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SUCCESS = 0x0000
#: Warning statuses of C-STORE (PS3.4 B.2.3): the instance was stored.
STORED_WARNINGS = frozenset({0xB000, 0xB006, 0xB007})
#: Pauses (s) after a failure: first, and the cap of the doubling.
_RETRY_FIRST_S = 0.05
_RETRY_MAX_S = 2.0


@dataclass
class SendStats:
    """What happened on the wire, for the report."""

    attempts: int = 0
    acknowledged: int = 0
    #: failure status code (hex) or "aborted" / "no-association" / "error:<type>" -> count.
    failures: Counter[str] = field(default_factory=Counter)
    associations: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def retries(self) -> int:
        return sum(self.failures.values())

    @property
    def seconds(self) -> float:
        end = self.finished_at or time.monotonic()
        return max(end - self.started_at, 1e-9) if self.started_at else 0.0


class _RateLimit:
    """A token bucket shared by the sending threads (None rate: unlimited)."""

    def __init__(self, per_second: float | None) -> None:
        self.per_second = per_second
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        if not self.per_second:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + 1.0 / self.per_second
        delay = slot - time.monotonic()
        if delay > 0:
            stop.wait(delay)


class StoreSender:
    """Send every file to a C-STORE SCP until each one is acknowledged (or :meth:`stop`)."""

    def __init__(
        self,
        host: str,
        port: int,
        called_ae: str,
        files: Sequence[tuple[str, Path]],
        *,
        calling_ae: str = "FAULTSCU",
        associations: int = 4,
        per_association: int = 500,
        rate: float | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.host = host
        self.port = port
        self.called_ae = called_ae
        self.calling_ae = calling_ae
        self.threads = max(1, associations)
        self.per_association = per_association
        self.timeout_s = timeout_s
        self.total = len(files)
        self._pending: deque[tuple[str, Path]] = deque(files)
        self._in_flight = 0
        self._acked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._done = threading.Event()
        self._rate = _RateLimit(rate)
        self._workers: list[threading.Thread] = []
        self.stats = SendStats()

    # ------------------------------------------------------------------ public

    def start(self) -> None:
        """Start the sending threads (each keeps an association open and reconnects as needed)."""
        self.stats.started_at = time.monotonic()
        if not self._pending:
            self._finish()
            return
        for i in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"faults-sender-{i}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def wait(self, timeout_s: float | None = None) -> bool:
        """True once every file is acknowledged; False if ``timeout_s`` passed first."""
        return self._done.wait(timeout_s)

    def stop(self) -> None:
        """Stop sending (files not yet acknowledged stay unacknowledged)."""
        self._stop.set()
        for thread in self._workers:
            thread.join(timeout=self.timeout_s + 5)
        if not self.stats.finished_at:
            self.stats.finished_at = time.monotonic()

    def acknowledged(self) -> set[str]:
        """SOP Instance UIDs the receiver answered Success (or a stored-Warning) for."""
        with self._lock:
            return set(self._acked)

    def ack_times(self) -> list[float]:
        """Monotonic times of every acknowledgement, in order (for the pauses of the failover phase)."""
        with self._lock:
            return sorted(self._acked.values())

    def failure_count(self) -> int:
        """Attempts answered with anything but a stored status so far (failure statuses, aborts ...)."""
        with self._lock:
            return self.stats.retries

    def acked_count(self) -> int:
        with self._lock:
            return len(self._acked)

    # ------------------------------------------------------------------ workers

    def _take(self) -> tuple[str, Path] | None:
        with self._lock:
            if not self._pending:
                return None
            self._in_flight += 1
            return self._pending.popleft()

    def _settle(self, item: tuple[str, Path], acknowledged: bool, failure: str | None) -> None:
        with self._lock:
            self._in_flight -= 1
            self.stats.attempts += 1
            if acknowledged:
                self._acked[item[0]] = time.monotonic()
                self.stats.acknowledged = len(self._acked)
            else:
                self.stats.failures[failure or "unknown"] += 1
                self._pending.append(item)
            finished = not self._pending and self._in_flight == 0
        if finished:
            self._finish()

    def _finish(self) -> None:
        self.stats.finished_at = time.monotonic()
        self._done.set()

    def _run(self) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.acse_timeout = self.timeout_s
        ae.dimse_timeout = self.timeout_s
        ae.network_timeout = self.timeout_s
        from dicomflow.dicom.constants import EXPLICIT_VR_LE
        from dicomflow_faults.instances import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE

        for sop_class in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
            ae.add_requested_context(sop_class, EXPLICIT_VR_LE)
        pause = _RETRY_FIRST_S
        assoc: Any = None
        sent_on_assoc = 0
        try:
            while not self._stop.is_set() and not self._done.is_set():
                if assoc is None or not assoc.is_established or sent_on_assoc >= self.per_association:
                    self._release(assoc)
                    assoc, sent_on_assoc = self._associate(ae), 0
                    if assoc is None:
                        self._stop.wait(pause)
                        pause = min(pause * 2, _RETRY_MAX_S)
                        continue
                item = self._take()
                if item is None:
                    self._stop.wait(0.05)  # others are in flight; one may come back for a retry
                    continue
                self._rate.wait(self._stop)
                ok, failure = self._store(assoc, item[1])
                sent_on_assoc += 1
                self._settle(item, ok, failure)
                if ok:
                    pause = _RETRY_FIRST_S
                else:
                    self._stop.wait(pause)
                    pause = min(pause * 2, _RETRY_MAX_S)
        finally:
            self._release(assoc)

    def _associate(self, ae: Any) -> Any:
        """An established association with TCP_NODELAY, or None (counted as a failure)."""
        try:
            assoc = ae.associate(self.host, self.port, ae_title=self.called_ae)
        except (OSError, RuntimeError) as exc:
            with self._lock:
                self.stats.failures[f"error:{type(exc).__name__}"] += 1
            return None
        if not assoc.is_established:
            with self._lock:
                self.stats.failures["no-association"] += 1
            return None
        sock = getattr(getattr(assoc.dul, "socket", None), "socket", None)
        if isinstance(sock, socket.socket):
            try:  # a small request and a small answer: without this each C-STORE waits ~40 ms
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        with self._lock:
            self.stats.associations += 1
        return assoc

    @staticmethod
    def _release(assoc: Any) -> None:
        if assoc is None:
            return
        try:
            if assoc.is_established:
                assoc.release()
            else:
                assoc.abort()
        except (OSError, RuntimeError):
            pass

    def _store(self, assoc: Any, path: Path) -> tuple[bool, str | None]:
        """Send one file; (acknowledged, failure label)."""
        try:
            status = assoc.send_c_store(path)
        except (OSError, RuntimeError, ValueError) as exc:
            return False, f"error:{type(exc).__name__}"
        code = getattr(status, "Status", None)
        if code is None:
            return False, "aborted"
        if code == SUCCESS or code in STORED_WARNINGS:
            return True, None
        return False, f"0x{int(code):04X}"


__all__ = ["STORED_WARNINGS", "SUCCESS", "SendStats", "StoreSender"]
