"""The storage layer against real backends: a folder, and a real S3 server (S3Proxy, SigV4).

Every operation runs on both backends (parametrized); the S3 one is a private
S3Proxy started once for the module (:mod:`tests.integration.s3_support`),
so the shared stack needs no ``--s3``. Each test gets its own key prefix.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomflow.blobs import BlobAccessDenied, BlobLocationError, BlobNotFound, BlobStore, BlobUnavailable, FilesystemStore
from dicomflow.blobs.s3 import S3Store
from dicomflow.errors import is_poison
from dicomflow.settings import Settings, StorageS3Settings
from dicomflow.stack import free_port
from tests.integration.s3_support import CHUNK, client_settings, private_s3proxy

KEY = "default/20240101/1.2.3/1.2.3.4/1.2.3.4.5.dcm"


@pytest.fixture(scope="module")
def s3_settings(base_settings: Settings) -> Iterator[StorageS3Settings]:
    with private_s3proxy(base_settings) as server:
        yield client_settings(server)


@pytest.fixture(params=["filesystem", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "filesystem":
        return FilesystemStore(tmp_path / "storage")
    s3 = request.getfixturevalue("s3_settings")
    return S3Store(dataclasses.replace(s3, prefix=f"test-{uuid.uuid4().hex[:10]}/"))


def test_put_read_head_exists_delete(store: BlobStore) -> None:
    data = os.urandom(25 * 1024)
    assert not store.exists(KEY)
    assert store.put(KEY, data) == len(data)
    assert store.exists(KEY)
    assert store.read(KEY) == data
    assert store.head(KEY).size == len(data)
    assert store.put(KEY, b"replaced") == 8
    assert store.read(KEY) == b"replaced"
    store.delete(KEY)
    assert not store.exists(KEY)
    store.delete(KEY)  # idempotent


def test_byte_ranges(store: BlobStore) -> None:
    data = bytes(range(256)) * 40
    store.put(KEY, data)
    assert store.read_range(KEY, 0, 132) == data[:132]
    assert store.read_range(KEY, 1000, 500) == data[1000:1500]
    assert store.read_range(KEY, len(data) - 10, 100) == data[-10:]  # clipped at the end
    assert store.read_range(KEY, len(data), 10) == b""
    assert store.read_range(KEY, len(data) + 50, 10) == b""
    assert store.read_range(KEY, 5, 0) == b""
    with pytest.raises(ValueError):
        store.read_range(KEY, -1, 5)


def test_stream_in_chunks(store: BlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 123)
    store.put(KEY, data)
    chunks = list(store.stream(KEY, chunk_size=1024 * 1024))
    assert b"".join(chunks) == data
    assert len(chunks) >= 2


def test_put_file_over_the_threshold_goes_multipart(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 4097)
    source = tmp_path / "spool.dcm"
    source.write_bytes(data)
    assert store.put_file(KEY, source) == len(data)
    assert store.read(KEY) == data
    assert store.read_range(KEY, CHUNK - 2, 4) == data[CHUNK - 2:CHUNK + 2]  # across the part boundary
    info = store.head(KEY)
    assert info.size == len(data)
    if isinstance(store, S3Store):
        assert info.etag is not None and info.etag.strip('"').endswith("-2"), info.etag  # two parts
        small = tmp_path / "small.dcm"
        small.write_bytes(b"x" * 1000)
        store.put_file("small.dcm", small)
        etag = store.head("small.dcm").etag
        assert etag is not None and "-" not in etag  # one PUT
    with pytest.raises(BlobNotFound):
        store.put_file("other.dcm", tmp_path / "missing.dcm")


def test_list_by_prefix_in_key_order(store: BlobStore) -> None:
    keys = ["t1/2024/a.dcm", "t1/2024/b/c.dcm", "t1/20240101/d.dcm", "t1/2024-x.dcm", "t2/e.dcm"]
    for i, key in enumerate(keys):
        store.put(key, b"x" * (i + 1))
    assert [b.key for b in store.list("t1/2024")] == ["t1/2024/a.dcm", "t1/2024/b/c.dcm"]
    assert [(b.key, b.size) for b in store.list("t2/")] == [("t2/e.dcm", 5)]
    assert [b.key for b in store.list("")] == sorted(keys)
    assert list(store.list("nothing/here")) == []
    assert list(store.list("t2/e.dcm")) == []  # an object is not under itself


def test_listing_skips_a_crashed_writes_temporary_file(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "storage")
    store.put("a/b.dcm", b"x")
    (tmp_path / "storage" / "a" / ".c.dcm.0123456789ab.tmp").write_bytes(b"half")
    assert [b.key for b in store.list("a")] == ["a/b.dcm"]


def test_a_missing_object_is_poison(store: BlobStore) -> None:
    store.put("other/held.dcm", b"x")  # a store in use (on the filesystem: its root exists, see the unit tests)
    for read in (lambda: store.read(KEY), lambda: store.read_range(KEY, 0, 10), lambda: store.stream(KEY),
                 lambda: store.head(KEY)):
        with pytest.raises(BlobNotFound) as info:
            read()
        assert is_poison(info.value)


def test_locations_round_trip_and_bad_ones_are_refused(store: BlobStore) -> None:
    loc = store.location(KEY)
    assert store.key_of(loc) == KEY
    if isinstance(store, S3Store):
        assert loc == f"s3://{store.bucket}/{store.prefix}{KEY}"
        bad = [f"s3://{store.bucket}/{KEY}", f"s3://other/{store.prefix}{KEY}", f"s3://{store.bucket}/{store.prefix}../x"]
    else:
        bad = ["/etc/passwd", f"{loc}/../../../x"]
    for location in bad:
        with pytest.raises(BlobLocationError):
            store.key_of(location)
    with pytest.raises(BlobLocationError):
        store.put("../escape.dcm", b"x")


def test_a_refused_connection_is_transient(s3_settings: StorageS3Settings) -> None:
    down = S3Store(dataclasses.replace(s3_settings, endpoint=f"http://127.0.0.1:{free_port()}"))
    for call in (lambda: down.put(KEY, b"x"), lambda: down.read(KEY), lambda: down.exists(KEY)):
        with pytest.raises(BlobUnavailable) as info:
            call()
        assert not is_poison(info.value)


def test_wrong_credentials_are_denied_not_poison(s3_settings: StorageS3Settings) -> None:
    wrong = S3Store(dataclasses.replace(s3_settings, secret_access_key="not-the-secret"))
    with pytest.raises(BlobAccessDenied) as info:
        wrong.put(KEY, b"x")
    assert not is_poison(info.value)


def test_create_writes_only_a_free_key(store: BlobStore, tmp_path: Path) -> None:
    assert store.create(KEY, b"first") is True
    assert store.create(KEY, b"second") is False  # nothing written
    assert store.read(KEY) == b"first"
    source = tmp_path / "spooled.dcm"
    source.write_bytes(b"from a file")
    assert store.create("other.dcm", source) is True
    assert store.create("other.dcm", source) is False
    assert store.read("other.dcm") == b"from a file"
    assert sorted(i.key for i in store.list()) == sorted([KEY, "other.dcm"])  # no temporary file left
    with pytest.raises(BlobNotFound):
        store.create("third.dcm", tmp_path / "missing.dcm")


def test_create_above_the_threshold_goes_multipart(store: BlobStore, tmp_path: Path) -> None:
    data = os.urandom(CHUNK + 4097)
    source = tmp_path / "large.dcm"
    source.write_bytes(data)
    assert store.create(KEY, source) is True
    assert store.create(KEY, source) is False
    assert store.read(KEY) == data
    if isinstance(store, S3Store):
        etag = store.head(KEY).etag
        assert etag is not None and etag.strip('"').endswith("-2"), etag


def test_copy_inside_the_store(store: BlobStore) -> None:
    store.put(KEY, b"original")
    backup = KEY.replace("1.2.3.4.5.dcm", ".1.2.3.4.5.dcm.backup")
    store.copy(KEY, backup)
    store.put(KEY, b"changed")
    assert store.read(backup) == b"original"
    store.copy(backup, KEY)
    assert store.read(KEY) == b"original"
    with pytest.raises(BlobNotFound):
        store.copy("missing.dcm", "elsewhere.dcm")


def test_create_on_a_closed_port_is_transient(s3_settings: StorageS3Settings) -> None:
    dead = S3Store(dataclasses.replace(s3_settings, endpoint=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(BlobUnavailable) as failed:
        dead.create(KEY, b"x")
    assert not is_poison(failed.value)


def test_delete_many_in_one_call(store: BlobStore) -> None:
    keys = [f"t1/2024/{i}.dcm" for i in range(5)]
    for key in keys:
        store.put(key, b"x")
    store.delete_many([*keys[:3], "t1/2024/missing.dcm"])  # a missing one is no error
    assert [i.key for i in store.list()] == keys[3:]
    store.delete_many([])


def test_read_head_is_the_first_bytes_and_the_whole_size(store: BlobStore) -> None:
    data = bytes(range(256)) * 100
    store.put(KEY, data)
    assert store.read_head(KEY, 8192) == (data[:8192], len(data))
    assert store.read_head(KEY, 1) == (data[:1], len(data))
    store.put(KEY, b"short")
    assert store.read_head(KEY, 8192) == (b"short", 5)
    store.put(KEY, b"")
    assert store.read_head(KEY, 8192) == (b"", 0)
    store.delete(KEY)
    with pytest.raises(BlobNotFound):
        store.read_head(KEY, 8192)
