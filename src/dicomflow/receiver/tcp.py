"""TCP options of an accepted DICOM connection: send without delay, acknowledge without delay.

Both network engines (and the multi-process dispatcher) set them through
this module; every option is an observer: a platform or socket without it
loses only speed, never the association.

- :func:`set_nodelay`: our own small PDUs (A-ASSOCIATE-AC, C-STORE-RSP) go
  out at once instead of waiting for Nagle's algorithm.
- :func:`prompt_acks`: the *sender's* Nagle. A sender that leaves Nagle on
  (dcmtk's ``storescu`` without ``TCP_NODELAY`` in its environment, and many
  toolkits by default) holds the last, short segment of each PDU until
  everything before it is acknowledged; the receiving kernel delays that
  acknowledgement (up to ~40 ms on Linux) because we have nothing to send
  back yet. Every C-STORE stalls once or twice: ~20 instances/s instead of
  hundreds. Linux's ``TCP_QUICKACK`` sends a pending acknowledgement at once
  and leaves the delayed-ACK mode, but the kernel returns to that mode by
  itself (each time we answer), so it is set again after every read: the
  socket :func:`prompt_acks` returns does that in its ``recv``. Over TLS the
  context makes :class:`QuickAckSSLSocket` s (:func:`use_prompt_acks`), whose
  reads do the same.
"""

from __future__ import annotations

import functools
import logging
import socket
import ssl

log = logging.getLogger(__name__)


def set_nodelay(sock: socket.socket) -> None:
    """Turn Nagle's algorithm off on our side (observer: a failure only costs latency)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        log.debug("could not set TCP_NODELAY: %s", exc)


@functools.cache
def quickack_option() -> int | None:
    """The platform's ``TCP_QUICKACK`` (Linux), or None; said once at debug level when missing."""
    option: int | None = getattr(socket, "TCP_QUICKACK", None)
    if option is None:
        log.debug("this platform has no TCP_QUICKACK: a sender that leaves Nagle's algorithm on "
                  "waits for delayed acknowledgements (~40 ms per C-STORE)")
    return option


def _rearm(sock: socket.socket) -> bool:
    """Set TCP_QUICKACK once; False (said at debug level) when this socket refuses it."""
    option = quickack_option()
    if option is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, 1)
    except OSError as exc:
        log.debug("could not set TCP_QUICKACK on %s: %s; acknowledgements stay delayed", sock, exc)
        return False
    return True


class QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it read at once: ``TCP_QUICKACK`` set again after each read."""

    #: Cleared (for this socket only) the first time the option is refused.
    _quickack = True

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        data = super().recv(bufsize, flags)
        if self._quickack:
            self._quickack = _rearm(self)
        return data

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int = 0, flags: int = 0, /) -> int:  # type: ignore[override]
        count = super().recv_into(buffer, nbytes, flags)
        if self._quickack:
            self._quickack = _rearm(self)
        return count


class QuickAckSSLSocket(ssl.SSLSocket):
    """:class:`QuickAckSocket` over TLS: the context builds these (:func:`use_prompt_acks`).

    Each read returns decrypted bytes of records already received; re-arming
    then acknowledges the TCP segments they came in.
    """

    _quickack = True

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        data = super().recv(buflen, flags)
        if self._quickack:
            self._quickack = _rearm(self)
        return data

    def recv_into(self, buffer: memoryview | bytearray, nbytes: int | None = None, flags: int = 0) -> int:  # type: ignore[override]
        count = super().recv_into(buffer, nbytes, flags)
        if self._quickack:
            self._quickack = _rearm(self)
        return count


def prompt_acks(sock: socket.socket) -> socket.socket:
    """``sock`` (an accepted TCP connection) as a :class:`QuickAckSocket`, owning the same descriptor.

    Returned unchanged when the platform has no ``TCP_QUICKACK``, when it is
    not a TCP socket, or when it already speaks TLS (whose context decides:
    :func:`use_prompt_acks`). The caller uses the returned socket from then
    on: the one passed in is detached (closed without closing the connection).
    """
    if isinstance(sock, QuickAckSocket | ssl.SSLSocket) or quickack_option() is None:
        return sock
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return sock
    timeout = sock.gettimeout()
    armed = QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    armed.settimeout(timeout)
    armed._quickack = _rearm(armed)
    return armed


def use_prompt_acks(context: ssl.SSLContext) -> None:
    """Make ``context.wrap_socket`` return :class:`QuickAckSSLSocket` s (prompt acknowledgements over TLS)."""
    if quickack_option() is not None:
        context.sslsocket_class = QuickAckSSLSocket


__all__ = ["QuickAckSSLSocket", "QuickAckSocket", "prompt_acks", "quickack_option", "set_nodelay", "use_prompt_acks"]
