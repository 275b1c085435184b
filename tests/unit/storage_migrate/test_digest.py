"""The checksums a migrated object is verified with (:mod:`dicomflow.storage_migrate.digest`)."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from dicomflow.storage_migrate import digest_of


def _etag_in_parts(data: bytes, part: int) -> str:
    """S3's ETag of a multipart upload, as AWS documents it (MD5 of the parts' MD5s, then -<parts>)."""
    digests = b"".join(hashlib.md5(data[i:i + part]).digest() for i in range(0, len(data), part))
    return f"{hashlib.md5(digests).hexdigest()}-{-(-len(data) // part)}"


@pytest.mark.parametrize("chunk", [1, 7, 1000, 4096, 100_000])
def test_one_pass_gives_size_md5_sha256_and_the_multipart_etag(chunk: int) -> None:
    data = os.urandom(25_000)
    sink = io.BytesIO()
    d = digest_of((data[i:i + chunk] for i in range(0, len(data), chunk)), 4096, sink=sink)
    assert sink.getvalue() == data
    assert (d.size, d.md5, d.sha256) == (len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    assert d.multipart_etag == _etag_in_parts(data, 4096)


def test_an_object_within_one_part_has_no_multipart_etag() -> None:
    for size in (0, 1, 4096):  # S3Store sends one PUT up to the part size inclusive
        assert digest_of([b"x" * size], 4096).multipart_etag is None
    assert digest_of([b"x" * 4097], 4096).multipart_etag is not None


def test_etag_comparison() -> None:
    data = os.urandom(9000)
    d = digest_of([data], 4096)
    assert d.matches_etag(f'"{hashlib.md5(data).hexdigest()}"')
    assert d.matches_etag(hashlib.md5(data).hexdigest().upper())
    assert d.matches_etag(_etag_in_parts(data, 4096))
    assert not d.matches_etag(_etag_in_parts(data, 2048))  # another client's part size: read back instead
    assert not d.matches_etag(None)
    assert not d.matches_etag("")
    assert not d.matches_etag(hashlib.md5(data + b"!").hexdigest())


def test_part_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        digest_of([b"x"], 0)
