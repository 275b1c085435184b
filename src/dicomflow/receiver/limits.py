"""Association slots shared by every process of one receiver, held as ``flock`` locks on slot files.

``receiver.max_associations`` is for the whole receiver, whatever
``--processes`` says, and ``receiver.max_associations_per_ae`` (when > 0)
for each calling AE title. The dispatcher creates one folder for the
receiver; every process (the worker processes, or the single receiver)
opens the same slot files there:

- ``total-{i}.lock`` for ``i < max_associations``;
- ``ae-{sha256(AE title)[:20]}-{j}.lock`` for ``j < max_associations_per_ae``.

An association holds one slot of each kind: an exclusive, non-blocking
``flock`` on one free file. Why locks and not a shared counter: the kernel
releases a process's locks when it dies, however it dies, so a worker
SIGKILLed in the middle of its associations gives its slots back at once;
a counter would leak them. A lock is taken with two system calls per slot
tried; the first free slot is usually the first tried, because each
process starts from a different place.

The total slot files stay open for the process's life (one descriptor each,
locked and unlocked as associations come and go; within the process a set
says which are held, since ``flock`` does not exclude the same open file
twice). A per-AE slot file is opened when taken and closed when released.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import ReceiverError

log = logging.getLogger(__name__)

_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@dataclass
class Slot:
    """One association's hold on its slots; :meth:`SlotLimiter.release` gives them back."""

    total: int
    ae_fd: int | None = None
    released: bool = False


class SlotRefused(ReceiverError):
    """No slot free; ``kind`` is ``limit`` (whole receiver) or ``limit-per-ae``."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        super().__init__(reason)


class SlotLimiter:
    """Slots for ``total`` associations at once (and ``per_ae`` per calling AE when > 0) in ``folder``.

    Raises:
        OSError: (constructor) the folder or its slot files cannot be created.
    """

    def __init__(self, folder: Path, total: int, per_ae: int = 0) -> None:
        if total < 1:
            raise ValueError("total must be at least 1")
        self.folder = folder
        self.total = total
        self.per_ae = per_ae
        folder.mkdir(parents=True, exist_ok=True)
        self._fds = [os.open(folder / f"total-{i}.lock", _OPEN, 0o600) for i in range(total)]
        self._held: set[int] = set()
        self._lock = threading.Lock()
        self._start = os.getpid() % total

    def acquire(self, calling_ae: str) -> Slot:
        """Take a slot for a new association from ``calling_ae``.

        Raises:
            SlotRefused: every slot (of the receiver, or of this AE title) is taken.
        """
        with self._lock:
            total = self._take_total()
            if total is None:
                raise SlotRefused("limit", f"association limit {self.total} (receiver.max_associations) reached")
            self._held.add(total)
        slot = Slot(total)
        if self.per_ae > 0:
            slot.ae_fd = self._take_ae(calling_ae)
            if slot.ae_fd is None:
                self.release(slot)
                raise SlotRefused("limit-per-ae", (
                    f"association limit {self.per_ae} for calling AE title {calling_ae!r} "
                    "(receiver.max_associations_per_ae) reached"))
        return slot

    def _take_total(self) -> int | None:
        for step in range(self.total):
            i = (self._start + step) % self.total
            if i not in self._held and _try_lock(self._fds[i]):
                return i
        return None

    def _take_ae(self, calling_ae: str) -> int | None:
        digest = hashlib.sha256(calling_ae.encode("utf-8", "replace")).hexdigest()[:20]
        for j in range(self.per_ae):
            fd = os.open(self.folder / f"ae-{digest}-{j}.lock", _OPEN, 0o600)
            if _try_lock(fd):
                return fd
            os.close(fd)
        return None

    def release(self, slot: Slot) -> None:
        """Give the slots back (idempotent)."""
        if slot.released:
            return
        slot.released = True
        if slot.ae_fd is not None:
            os.close(slot.ae_fd)  # closing the only descriptor releases its lock
        with self._lock:
            fcntl.flock(self._fds[slot.total], fcntl.LOCK_UN)
            self._held.discard(slot.total)

    def held(self) -> int:
        """Slots this process holds now."""
        with self._lock:
            return len(self._held)

    def close(self) -> None:
        """Close the slot files (every slot of this process is released)."""
        with self._lock:
            for fd in self._fds:
                os.close(fd)
            self._fds = []
            self._held.clear()


__all__ = ["Slot", "SlotLimiter", "SlotRefused"]
