"""The socket ``dicomflow web --workers N`` shares: accepted connections must have Nagle off."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest
import uvloop

from dicomflow.web.server import listening_socket


def _accepted_nodelay(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> int:
    sock = listening_socket("127.0.0.1", 0)
    seen: list[int] = []

    async def main() -> None:
        accepted = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.append(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
                accepted.set()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        with socket.create_connection(sock.getsockname()[:2], timeout=5):
            await asyncio.wait_for(accepted.wait(), 5)  # woken by the accept, no polling
        server.close()
        await server.wait_closed()

    loop = new_loop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert seen, "no connection was accepted"
    return seen[0]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accepted_connections_have_tcp_nodelay(loop: str) -> None:
    sock = listening_socket("127.0.0.1", 0)
    assert sock.proto == socket.IPPROTO_TCP and sock.get_inheritable()
    sock.close()
    assert _accepted_nodelay(asyncio.new_event_loop if loop == "asyncio" else uvloop.new_event_loop) == 1
