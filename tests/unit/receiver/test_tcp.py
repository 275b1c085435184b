"""The receiver's TCP options on real local sockets: prompt acknowledgements re-armed after every read."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from dicomflow.receiver.tcp import QuickAckSocket, QuickAckSSLSocket, prompt_acks, set_nodelay, use_prompt_acks

linux_only = pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux's")


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted) over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        accepted, _ = listener.accept()
    try:
        yield client, accepted
    finally:
        client.close()
        accepted.close()


def quickack(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK)


@linux_only
def test_the_option_is_set_again_after_every_read(connection: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = connection
    accepted.settimeout(5.0)
    with prompt_acks(accepted) as armed:
        assert isinstance(armed, QuickAckSocket)
        assert armed.gettimeout() == 5.0  # the timeout survives the new socket object
        assert accepted.fileno() == -1  # the old object let go of the descriptor
        reads_rearm(client, armed)
        assert prompt_acks(armed) is armed


def reads_rearm(client: socket.socket, armed: socket.socket) -> None:
    for payload in (b"first", b"second"):
        # the kernel clears the option by itself; clear it here so only the read can have set it again
        armed.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
        assert quickack(armed) == 0
        client.sendall(payload)
        assert armed.recv(64) == payload
        assert quickack(armed) == 1
    buffer = bytearray(8)
    armed.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
    client.sendall(b"into")
    assert armed.recv_into(buffer) == 4 and bytes(buffer[:4]) == b"into"
    assert quickack(armed) == 1


def test_what_is_not_tcp_is_left_alone() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert prompt_acks(left) is left
        set_nodelay(left)  # refused by a Unix socket: said at debug level, not raised
        left.sendall(b"x")
        assert right.recv(1) == b"x"


@linux_only
def test_a_tls_context_makes_rearming_sockets() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    use_prompt_acks(context)
    assert context.sslsocket_class is QuickAckSSLSocket
