"""The checked-token cache of the DICOMweb authenticator: never past exp, never for a different token."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomflow.settings import load_settings
from dicomflow.web.auth import Authenticator, _TokenCache
from tests.integration.web_support import make_keys, oauth2_settings


def _request(token: str) -> Request:
    return Request({"type": "http", "method": "GET", "path": "/studies", "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {token}".encode())]})


def test_a_cached_token_expires_at_its_exp() -> None:
    now = [1_700_000_000.0]
    cache = _TokenCache(capacity=2, clock=lambda: now[0])
    cache.put("a", {"exp": now[0] + 0.3})
    cache.put("no-exp", {"sub": "x"})  # not cacheable
    assert cache.get("a") is not None and cache.get("no-exp") is None
    now[0] += 0.299
    assert cache.get("a") is not None
    now[0] += 0.001
    assert cache.get("a") is None  # at exp, not a moment later


def test_expired_entries_make_room_before_live_ones_are_dropped() -> None:
    now = [1_700_000_000.0]
    cache = _TokenCache(capacity=2, clock=lambda: now[0])
    cache.put("live", {"exp": now[0] + 60})  # the oldest entry, but still valid
    cache.put("short", {"exp": now[0] + 1})
    now[0] += 2
    cache.put("new", {"exp": now[0] + 60})
    assert cache.get("live") is not None and cache.get("new") is not None and cache.get("short") is None


def test_the_cache_stays_bounded() -> None:
    cache = _TokenCache(capacity=2)
    for name in ("a", "b", "c"):
        cache.put(name, {"exp": time.time() + 60})
    assert cache.get("a") is None and cache.get("b") is not None and cache.get("c") is not None


def test_a_token_with_another_signature_is_checked_again(tmp_path: Path) -> None:
    keys = make_keys(tmp_path)
    settings = oauth2_settings(load_settings(None, {}), keys, 8080)
    auth = Authenticator(settings)
    good = keys.token()
    assert asyncio.run(auth.authenticate(_request(good), "read")).tenant == "default"
    assert asyncio.run(auth.authenticate(_request(good), "read")).user == "alice"  # from the cache
    header, payload, _ = good.split(".")
    forged = ".".join((header, payload, keys.token(key="other").split(".")[2]))
    with pytest.raises(HTTPException) as refused:
        asyncio.run(auth.authenticate(_request(forged), "read"))
    assert refused.value.status_code == 401
    # the scope is still checked on every request, cached or not
    reader = keys.token(scope="dicomweb.read")
    asyncio.run(auth.authenticate(_request(reader), "read"))
    with pytest.raises(HTTPException) as forbidden:
        asyncio.run(auth.authenticate(_request(reader), "write"))
    assert forbidden.value.status_code == 403
