"""A ``stack up`` that fails half-way stops what it started, and the state file remembers ``--s3``."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dicomflow.errors import StackError
from dicomflow.stack import LocalStack
from dicomflow.stack.state import read_state
from dicomflow_faults.privstack import PrivateStack


def test_a_failed_up_stops_the_services_it_started(tmp_path: Path) -> None:
    private = PrivateStack(base=tmp_path, s3=True)
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", private.stack_settings.s3_port))  # S3Proxy's port: its start must fail
        taken.listen(1)
        with pytest.raises(StackError, match="S3Proxy"):
            private.stack.up(s3=True)
        stack = private.stack
        assert stack.postgres.pid() is None, "PostgreSQL was left running"
        assert not any(s.running for s in stack.kafka.status()), "Kafka was left running"
        assert read_state(private.dir) is None  # nothing remembered of a stack that did not come up
    finally:
        taken.close()
        private.close()


def test_a_plain_up_after_up_with_s3_starts_s3proxy_again(tmp_path: Path) -> None:
    private = PrivateStack(base=tmp_path, s3=False)
    try:
        private.stack.up(s3=True)
        state = read_state(private.dir)
        assert state is not None and state.s3
        private.stack.s3proxy.stop()
        again = LocalStack(private.settings)  # a new command: no --s3, settings without [stack] s3
        names = {s.name: s.running for s in again.up()}
        assert names["s3proxy"], names
    finally:
        private.close()
