"""The local stack's S3Proxy: SigV4 enforced, objects private, credentials 0600, settings handed on.

On a private server (:mod:`tests.integration.s3_support`), not the shared stack's.
"""

from __future__ import annotations

import dataclasses
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.blobs.s3 import S3Store
from dicomflow.errors import StackError
from dicomflow.settings import Settings, StorageS3Settings
from dicomflow.stack import LocalStack, S3ProxyServer
from tests.integration.s3_support import client_settings, private_s3proxy


@pytest.fixture(scope="module")
def s3proxy(base_settings: Settings) -> Iterator[S3ProxyServer]:
    with private_s3proxy(base_settings) as server:
        yield server


@pytest.fixture(scope="module")
def s3_settings(s3proxy: S3ProxyServer) -> StorageS3Settings:
    return client_settings(s3proxy)


def test_the_server_requires_sigv4_and_keeps_objects_private(s3proxy: S3ProxyServer, s3_settings: StorageS3Settings) -> None:
    S3Store(s3_settings).put("private.dcm", b"secret bytes")
    for url in (f"{s3proxy.endpoint}/{s3proxy.bucket}", f"{s3proxy.endpoint}/{s3proxy.bucket}/private.dcm"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=5)
        info.value.close()
        assert info.value.code == 403


def test_the_stack_fills_the_settings_and_keeps_its_credentials_private(s3proxy: S3ProxyServer) -> None:
    status = s3proxy.status()
    assert status.running and status.pid
    for secret_file in (s3proxy.properties, s3proxy.client_file):
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    filled = s3proxy.fill(Settings())
    assert filled.storage.s3.endpoint == s3proxy.endpoint
    assert filled.storage.s3.access_key_id.startswith("dicomflow-")
    assert filled.storage.s3.path_style
    assert filled.storage.backend == "filesystem"  # the backend stays as configured
    mine = dataclasses.replace(Settings().storage.s3, endpoint="https://s3.example")
    configured = dataclasses.replace(Settings(), storage=dataclasses.replace(Settings().storage, s3=mine))
    assert s3proxy.fill(configured) == configured  # an endpoint set by the user wins


def test_the_local_stack_lists_s3proxy_and_hands_its_settings_on(s3proxy: S3ProxyServer) -> None:
    """What ``stack status`` prints and what tests and the demo get from ``LocalStack.settings``."""
    stack_settings = dataclasses.replace(s3proxy.settings, s3=False)
    local = LocalStack(dataclasses.replace(Settings(), stack=stack_settings))
    rows = {s.name: s for s in local.status()}
    assert rows["s3proxy"].running and rows["s3proxy"].pid == s3proxy.pid()
    assert rows["s3proxy"].address == f"{s3proxy.endpoint}/{s3proxy.bucket}"
    assert local.settings.storage.s3.endpoint == s3proxy.endpoint
    store = S3Store(local.settings.storage.s3)
    store.put("through-the-stack.dcm", b"ok")
    assert store.read("through-the-stack.dcm") == b"ok"


def test_a_second_start_keeps_the_server_and_its_credentials(s3proxy: S3ProxyServer, s3_settings: StorageS3Settings) -> None:
    assert s3proxy.start() == s3proxy.pid()
    again = client_settings(s3proxy)
    assert (again.access_key_id, again.secret_access_key) == (s3_settings.access_key_id, s3_settings.secret_access_key)


def test_a_taken_port_is_refused_before_anything_starts(s3proxy: S3ProxyServer, tmp_path: Path) -> None:
    (tmp_path / "cache").symlink_to(s3proxy.jars.parent, target_is_directory=True)
    other = S3ProxyServer(dataclasses.replace(s3proxy.settings, dir=tmp_path), StorageS3Settings())
    with pytest.raises(StackError, match="already in use"):
        other.start()
    assert other.pid() is None
    assert not other.properties.exists()  # no credentials drawn for a server that never ran
