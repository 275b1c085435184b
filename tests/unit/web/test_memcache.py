"""The in-process answer cache: bounded by bytes, least recently used out first; and who is sent gzip."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from dicomflow.web.memcache import ByteBoundedCache
from dicomflow.web.metadata import accepts_gzip


def test_the_least_recently_used_goes_first_and_the_budget_holds() -> None:
    cache: ByteBoundedCache[str, bytes] = ByteBoundedCache(10, len)
    assert cache.put("a", b"1234") and cache.put("b", b"1234")
    assert cache.get("a") == b"1234"  # "b" is now the least recently used
    assert cache.put("c", b"1234")
    assert cache.get("b") is None and cache.get("a") == b"1234" and cache.get("c") == b"1234"
    assert cache.used == 8 and len(cache) == 2


def test_a_replaced_value_is_charged_once_and_a_too_big_one_is_not_kept() -> None:
    cache: ByteBoundedCache[str, bytes] = ByteBoundedCache(10, len)
    cache.put("a", b"12345678")
    cache.put("a", b"12")
    assert cache.used == 2
    assert not cache.put("a", b"x" * 11)
    assert cache.get("a") is None and cache.used == 0  # the old value is gone too: it was replaced
    nothing: ByteBoundedCache[str, bytes] = ByteBoundedCache(0, len)
    assert not nothing.put("a", b"1") and nothing.get("a") is None


def _request(accept_encoding: str | None) -> Request:
    headers = [] if accept_encoding is None else [(b"accept-encoding", accept_encoding.encode())]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "query_string": b""})


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip, deflate", True), ("br;q=1.0, gzip;q=0.8", True), ("*", True), ("GZIP", True),
    ("identity", False), ("gzip;q=0", False), ("deflate, gzip;q=0.0", False), (None, False), ("", False),
])
def test_gzip_only_for_a_client_that_accepts_it(header: str | None, gzip: bool) -> None:
    assert accepts_gzip(_request(header)) is gzip
