"""OAuth2 bearer tokens (JWT, RFC 9068 style) and the tenant they carry.

A request is authenticated by ``Authorization: Bearer <JWT>``, checked with
PyJWT: signature by a key of the configured JSON Web Key Set (RS256 or
ES256 only; ``none`` and HMAC are refused, so a public key can never be
used as a shared secret), ``iss`` equal to ``web.oauth2.issuer``, ``aud``
containing ``web.oauth2.audience``, ``exp`` in the future (``nbf`` / ``iat``
honoured when present). The key set comes from a file (read once) or an
``http(s)://`` URL (PyJWT's ``PyJWKClient``: fetched on first use, cached,
fetched again when a token names an unknown ``kid``, so key rotation works).

Checked tokens are cached (:class:`_TokenCache`, by the whole token string,
signature included) until their ``exp``: a client sends the same token with
every request, and checking an RS256 signature and the claims again each
time was a tenth of a WADO-RS instance retrieval's CPU time. A cached token
is never honoured past its ``exp`` (the leeway applies only to a full
check); a key removed from a remote key set stops being trusted for new
tokens at once and for already-checked ones when they expire.

The tenant is the ``web.oauth2.tenant_claim`` claim: never a header or a
parameter the client chooses. Scopes come from ``scope`` (space separated)
or ``scp`` (a list); reading needs ``read_scope``, storing ``write_scope``.

Failures: no or malformed token, bad signature, wrong issuer or audience,
expired -> 401 with ``WWW-Authenticate: Bearer error="invalid_token"``; a
valid token without the scope or the tenant claim -> 403.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request

from dicomflow.errors import ConfigError, DicomflowError
from dicomflow.settings import OAuth2Settings, Settings
from dicomflow.web.validate import header_text

log = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "ES256"]
Access = Literal["read", "write"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, its tenant and scopes."""

    user: str
    tenant: str
    scopes: frozenset[str]


class Unauthorized(HTTPException, DicomflowError):
    """401: no usable token."""

    def __init__(self, reason: str) -> None:
        quoted = header_text(reason)  # PyJWT's messages quote parts of the token (a kid, a claim)
        super().__init__(401, reason, headers={
            "WWW-Authenticate": f'Bearer realm="dicomflow", error="invalid_token", error_description="{quoted}"'})


class Forbidden(HTTPException, DicomflowError):
    """403: a valid token that does not allow this request."""

    def __init__(self, reason: str) -> None:
        quoted = header_text(reason)
        super().__init__(403, reason, headers={
            "WWW-Authenticate": f'Bearer realm="dicomflow", error="insufficient_scope", error_description="{quoted}"'})


class _Keys:
    """The signing keys: a JWKS file read once, or a URL fetched and cached by PyJWKClient."""

    def __init__(self, source: str) -> None:
        self._client: jwt.PyJWKClient | None = None
        self._set: jwt.PyJWKSet | None = None
        if source.startswith(("http://", "https://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=3600, timeout=10)
        else:
            path = Path(source)
            try:
                self._set = jwt.PyJWKSet.from_dict(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, jwt.PyJWKError) as exc:
                raise ConfigError("web.oauth2.jwks", source, f"cannot read the JSON Web Key Set: {exc}") from exc

    @property
    def remote(self) -> bool:
        return self._client is not None

    def key_for(self, token: str) -> Any:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        assert self._set is not None
        kid = jwt.get_unverified_header(token).get("kid")
        candidates = [k for k in self._set.keys if kid is None or k.key_id == kid]
        if not candidates:
            raise jwt.InvalidTokenError(f"no key with kid {kid!r} in the key set")
        return candidates[0].key


class _TokenCache:
    """Claims of tokens that passed every check, by token string, until their ``exp`` (bounded)."""

    def __init__(self, capacity: int = 4096, *, clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self._clock = clock  # Unix time, as ``exp`` is
        self._entries: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, token: str) -> dict[str, Any] | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, claims: dict[str, Any]) -> None:
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)):
            return
        if len(self._entries) >= self.capacity:
            now = self._clock()
            for key in [k for k, (until, _) in self._entries.items() if until <= now]:
                del self._entries[key]
            while len(self._entries) >= self.capacity:  # still full: drop the oldest entries
                del self._entries[next(iter(self._entries))]
        self._entries[token] = (float(exp), claims)


class Authenticator:
    """Checks bearer tokens (``auth = "oauth2"``) or lets everyone in as the default tenant (``"none"``)."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.web.auth
        self.default_tenant = settings.storage.default_tenant
        self.oauth2: OAuth2Settings = settings.web.oauth2
        self._keys: _Keys | None = None
        self._checked = _TokenCache()
        if self.mode == "oauth2":
            for key in ("jwks", "issuer", "audience", "tenant_claim"):
                if not getattr(self.oauth2, key):
                    raise ConfigError(f"web.oauth2.{key}", "settings",
                                      'required when web.auth = "oauth2" (set web.auth = "none" to turn auth off)')
            self._keys = _Keys(self.oauth2.jwks)

    def warn_if_open(self) -> None:
        if self.mode == "none":
            log.warning('web.auth = "none": DICOMweb requests are NOT authenticated; every caller is tenant %r',
                        self.default_tenant)

    async def authenticate(self, request: Request, access: Access) -> Principal:
        """The caller of ``request``, allowed ``access``.

        Raises:
            Unauthorized: no, malformed, expired or wrongly signed token (401).
            Forbidden: the token lacks the scope or the tenant claim (403).
        """
        if self.mode == "none":
            return Principal("anonymous", self.default_tenant, frozenset(("read", "write")))
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("a bearer token is required")
        assert self._keys is not None
        token = token.strip()
        claims = self._checked.get(token)
        if claims is None:
            claims = await self._check(token)
            self._checked.put(token, claims)
        scopes = _scopes(claims)
        wanted = self.oauth2.read_scope if access == "read" else self.oauth2.write_scope
        if wanted not in scopes:
            raise Forbidden(f"the token lacks the {wanted!r} scope")
        tenant = claims.get(self.oauth2.tenant_claim)
        if not isinstance(tenant, str) or not tenant:
            raise Forbidden(f"the token has no {self.oauth2.tenant_claim!r} claim (the tenant)")
        return Principal(str(claims.get("sub") or "unknown"), tenant, scopes)

    async def _check(self, token: str) -> dict[str, Any]:
        """The claims of ``token`` after checking its signature, issuer, audience and times (401 if not)."""
        assert self._keys is not None
        try:
            if self._keys.remote:
                key = await run_in_threadpool(self._keys.key_for, token)
            else:
                key = self._keys.key_for(token)
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=self.oauth2.audience, issuer=self.oauth2.issuer,
                options={"require": ["exp", "iss", "aud"]}, leeway=30,
            )
        except jwt.PyJWKClientError as exc:
            log.warning("token key lookup failed: %s", exc)
            raise Unauthorized(f"token key not found: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        return claims


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    found: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        found.update(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, list):
        found.update(str(s) for s in scp)
    elif isinstance(scp, str):
        found.update(scp.split())
    return frozenset(found)


__all__ = ["ALGORITHMS", "Access", "Authenticator", "Forbidden", "Principal", "Unauthorized"]
