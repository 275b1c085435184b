"""One request over a raw loopback socket, and what came back: a status, or how the connection ended.

Raw sockets, not an HTTP client: a client library refuses to send most of
what the phase sends (control characters in the target, broken headers),
and would hide how the server ended the connection. The body goes in
pieces, and the server's answer is looked for between them: a server that
refuses a body early (413) answers before it has read it, and a client that
kept sending would make the kernel reset the connection (a reset that would
look like a dropped connection). A whole request is never half-closed (the
server may take a half-close for a hang-up); bytes that are not a whole
request are, so that the server sees their end.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from dataclasses import dataclass

from dicomflow_faults.webfuzz.requests import Request

#: Most bytes of an answer kept (the rest is read and dropped: a WADO-RS study can be large).
KEEP_BYTES = 4 * 1024 * 1024
_PIECE = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """How one exchange ended: ``status`` when an HTTP answer came, else ``outcome`` says why not."""

    status: int | None
    #: "answered", "dropped" (closed or reset with no answer), "closed" (no answer to an incomplete request),
    #: "timeout", "garbage" (bytes that are not HTTP), or "connect-failed".
    outcome: str
    body: bytes = b""


def _pieces(request: Request) -> Iterator[bytes]:
    if not request.chunks:
        data = request.data
        for i in range(0, len(data), _PIECE):
            yield data[i:i + _PIECE]
        return
    yield request.data
    for chunk in request.chunks:
        yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    yield b"0\r\n\r\n"


def _send(conn: socket.socket, request: Request) -> None:
    """Send the request's bytes, stopping as soon as the server answers or closes."""
    for piece in _pieces(request):
        readable, _, _ = select.select([conn], [], [], 0)
        if readable:
            return
        try:
            conn.sendall(piece)
        except OSError:
            return


def _read(conn: socket.socket) -> tuple[bytes, bool]:
    """(the answer's first :data:`KEEP_BYTES`, whether the connection was reset)."""
    kept = bytearray()
    try:
        while chunk := conn.recv(65536):
            if len(kept) < KEEP_BYTES:
                kept += chunk[: KEEP_BYTES - len(kept)]
    except ConnectionResetError:
        return bytes(kept), True
    return bytes(kept), False


def exchange(port: int, request: Request, timeout_s: float = 20.0) -> Answer:
    """Send ``request`` to ``127.0.0.1:port`` and read until the server closes."""
    try:
        conn = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    except OSError as exc:
        return Answer(None, f"connect-failed:{type(exc).__name__}")
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            _send(conn, request)
            if not request.complete:
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            data, _reset = _read(conn)
        except TimeoutError:
            return Answer(None, "timeout")
    if not data:
        return Answer(None, "dropped" if request.complete else "closed")
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Answer(None, "garbage", data[:200])
    return Answer(int(parts[1]), "answered", body)


__all__ = ["Answer", "exchange"]
