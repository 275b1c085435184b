"""Ports for private services: outside the kernel's ephemeral range, distinct, free; start-up errors show the log."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dicomflow.errors import StackError
from dicomflow.stack import free_port, free_ports
from dicomflow.stack._proc import _ephemeral_low, log_tail, wait_port


def test_free_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ports = free_ports(12)
    assert len(set(ports)) == 12
    assert all(20000 <= p < _ephemeral_low() for p in ports)
    held = []
    try:
        for p in ports:  # every one can be bound (and they can all be held at once)
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            held.append(s)
    finally:
        for s in held:
            s.close()


def test_a_port_in_use_is_never_chosen() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        for _ in range(20):
            assert taken not in free_ports(50)


def test_avoided_ports_are_never_chosen() -> None:
    allowed = set(free_ports(5))
    avoid = frozenset(range(20000, _ephemeral_low())) - allowed
    assert set(free_ports(5, avoid=avoid)) == allowed
    with pytest.raises(StackError, match="found only 5 of 6 free ports"):
        free_ports(6, avoid=avoid)


def test_log_tail_gives_the_last_lines_indented(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)) + "java.net.BindException: Address already in use\n")
    tail = log_tail(log, lines=3)
    assert tail == "\n    line 98\n    line 99\n    java.net.BindException: Address already in use"
    assert log_tail(tmp_path / "missing.log") == ""


def test_a_service_that_dies_at_start_up_is_reported_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    started = time.monotonic()
    with pytest.raises(StackError, match=rf"Kafka node 1 \(PID {proc.pid}\) exited during start-up"):
        wait_port(free_port(), 30, proc.pid, "Kafka node 1")
    assert time.monotonic() - started < 5
