"""PostgreSQL with TLS (``stack up --secure``): clients connect with sslmode=verify-full.

A PostgreSQL server of this module only (free port, temporary folder; the
shared stack is never touched) runs with a certificate from a test CA
generated at start. The consumer indexes through it with verify-full; plain
TCP is refused; a client trusting another CA fails within seconds with an
error naming the server.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dicomflow.errors import StoreError
from dicomflow.settings import DatabaseSettings, Settings, StackSettings
from dicomflow.stack import PostgresServer, free_port
from dicomflow.stack import TestCA as CertificateAuthority
from dicomflow.store import PgStore
from tests.integration.consumer_support import corpus, counts, expected_counts, pipeline, publish, run_service

__all__ = ["pipeline"]




@pytest.fixture(scope="module")
def secure_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    port = free_port()
    stack_dir = tmp_path_factory.mktemp("pg-tls") / "stack"
    server = PostgresServer(StackSettings(dir=stack_dir, postgres_port=port), DatabaseSettings(port=port))
    server.start(secure=True)
    try:
        yield server
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(server.home, ignore_errors=True)
        if server.home.parent.name.startswith("dicomflow-"):  # the stack's fallback home outside tmp
            try:
                server.home.parent.rmdir()
            except OSError:
                pass


def test_verify_full_the_consumer_indexes_over_tls(pipeline: Settings, secure_postgres: PostgresServer) -> None:
    db = secure_postgres.client_settings(secure=True)
    assert db.sslmode == "verify-full" and Path(db.sslrootcert).is_file()
    with psycopg.connect(db.conninfo()) as conn:
        assert conn.pgconn.ssl_in_use
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
    store = PgStore(db)
    store.migrate()
    store.close()
    settings = dataclasses.replace(pipeline, database=db)
    c = corpus(settings, 30, studies=1, series_per_study=2)
    publish(settings, c.events)
    summary = run_service(settings, until_idle_s=3.0)
    assert summary.instances == 30
    assert counts(db) == expected_counts(c)
    # The consumer's health probe goes through the same settings.
    assert secure_postgres.tls_enabled()


def test_plain_tcp_is_refused(secure_postgres: PostgresServer) -> None:
    db = dataclasses.replace(secure_postgres.client_settings(secure=False), sslmode="disable")
    with pytest.raises(StoreError, match="no encryption"):
        PgStore(db).status()


def test_untrusted_ca_fails_fast_naming_the_server(secure_postgres: PostgresServer, tmp_path: Path) -> None:
    other = CertificateAuthority(tmp_path / "other-ca").ensure()
    db = dataclasses.replace(secure_postgres.client_settings(secure=True), sslrootcert=str(other.cert_file))
    t0 = time.monotonic()
    with pytest.raises(StoreError) as caught:
        PgStore(db).status()
    assert time.monotonic() - t0 < 5.0
    text = str(caught.value)
    assert f"127.0.0.1:{secure_postgres.port}" in text
    # OpenSSL says "certificate verify failed", or, for a CA of the same name, "signature failure".
    assert "SSL error" in text
    assert str(other.cert_file) in text


def test_verify_full_refuses_a_host_name_the_certificate_does_not_name(secure_postgres: PostgresServer) -> None:
    # 127.0.0.2 reaches the same loopback server, but the certificate is for 127.0.0.1 and localhost only.
    db = dataclasses.replace(secure_postgres.client_settings(secure=True), host="127.0.0.2")
    with pytest.raises(StoreError, match=re.escape("127.0.0.2")):
        PgStore(db).status()
