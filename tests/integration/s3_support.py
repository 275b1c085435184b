"""A private S3Proxy for the storage tests: own folder, a free port, the shared jar cache.

Like the private Kafka stacks of :mod:`.kafka_support`: the shared stack needs
no ``--s3``, and each test module gets a server of its own.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dicomflow.settings import Settings, StackSettings, StorageS3Settings
from dicomflow.stack import S3ProxyServer, free_port

#: The smallest part S3 takes: the multipart threshold of the tests' stores.
CHUNK = 5 * 1024 * 1024


@contextmanager
def private_s3proxy(shared: Settings) -> Iterator[S3ProxyServer]:
    """A running S3Proxy in a fresh folder, stopped and removed afterwards.

    The folder is not under pytest's 0700 temporary folders: a LocalStack
    built over it must not send its (unused) PostgreSQL folder to /var/tmp
    for want of a stack folder the postgres user can reach.
    """
    home = Path(tempfile.mkdtemp(prefix="dicomflow-test-s3-"))
    home.chmod(0o755)
    (home / "cache").symlink_to(shared.stack.dir.resolve() / "cache", target_is_directory=True)
    server = S3ProxyServer(StackSettings(dir=home, s3_port=free_port()), StorageS3Settings())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def client_settings(server: S3ProxyServer) -> StorageS3Settings:
    """The server's endpoint and credentials, with the tests' multipart threshold."""
    filled = server.client_settings(StorageS3Settings(multipart_chunk_bytes=CHUNK))
    assert filled is not None
    return filled
