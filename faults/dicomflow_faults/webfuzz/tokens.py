"""Bearer tokens for the web fuzz phase: good ones, and every kind a server must refuse.

The keys are made at run time (never committed): an RSA key the server's
key set holds, and one it does not (``wrong-key``). The key set file goes
into the phase's scratch folder. Token *kinds* are drawn from the phase's
seed; the signatures differ from run to run (a new key each run), the
requests otherwise do not.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ISSUER = "https://idp.faults.invalid/"
AUDIENCE = "dicomflow-faults"
KID = "faults-rsa-1"

#: Authorization header kinds, the first one the only one that must pass.
KINDS = ("good", "expired", "wrong-key", "alg-none", "hs256-public-key", "wrong-audience", "wrong-issuer",
         "no-tenant", "no-scope", "odd-kid", "malformed", "not-bearer", "missing")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class TokenKit:
    """The signing keys of one phase, their key set file, and a minter of good and bad tokens."""

    key: Any
    other: Any
    jwks_path: Path
    tenant: str
    _good: list[str] = field(default_factory=list, repr=False)

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "fuzzer", "tenant": self.tenant,
                                  "scope": "dicomweb.read dicomweb.write", "exp": now + 3600, "iat": now - 5}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], *, key: Any = None, headers: dict[str, Any] | None = None) -> str:
        import jwt

        return jwt.encode(claims, key if key is not None else self.key, algorithm="RS256",
                          headers={"kid": KID, **(headers or {})})

    def good(self) -> str:
        """The one good token of the run (minted once: signing costs the client more than the server checking)."""
        if not self._good:
            self._good.append(self.sign(self.claims()))
        return self._good[0]

    def authorization(self, kind: str, rng: random.Random) -> str | None:
        """The ``Authorization`` header value of ``kind`` (None: no header)."""
        if kind == "missing":
            return None
        if kind == "not-bearer":
            return rng.choice(["Basic ZnV6ejpmdXp6", "Bearer", "Bearer  ", "bearer", "Token " + self.good(), "Bearer\t"])
        return "Bearer " + self._token(kind, rng)

    def _token(self, kind: str, rng: random.Random) -> str:
        now = int(time.time())
        if kind == "good":
            return self.good()
        if kind == "expired":
            return self.sign(self.claims(exp=now - rng.choice([120, 3600, 10**6]), iat=now - 2 * 10**6))
        if kind == "wrong-key":
            return self.sign(self.claims(), key=self.other)
        if kind == "alg-none":
            header = {"alg": rng.choice(["none", "None", "NONE"]), "typ": "JWT", "kid": KID}
            body = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(self.claims()).encode())
            return body + rng.choice([".", "", "." + _b64(b"sig")])
        if kind == "hs256-public-key":  # the public key used as an HMAC secret (the classic confusion attack)
            return self._hs256_with_public_key()
        if kind == "wrong-audience":
            return self.sign(self.claims(aud=rng.choice(["someone-else", ["x", "y"], ""])))
        if kind == "wrong-issuer":
            return self.sign(self.claims(iss=rng.choice(["https://evil.invalid/", "", ISSUER + "x"])))
        if kind == "no-tenant":
            return self.sign(self.claims(tenant=rng.choice([None, "", 42, ["a"]])))
        if kind == "no-scope":
            return self.sign(self.claims(scope=rng.choice([None, "", "dicomweb.other", "read write"])))
        if kind == "odd-kid":  # PyJWT quotes the kid in its message: it must not reach a header unchecked
            kid = rng.choice(['\u4e2d\u6587"', "k\r\nX-Injected: 1", "\x00", "x" * 3000, '"; error="forged'])
            return self.sign(self.claims(), headers={"kid": kid})
        return _malformed(self.good(), rng)

    def _hs256_with_public_key(self) -> str:
        from cryptography.hazmat.primitives import serialization

        secret = self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": KID}).encode())
        body = _b64(json.dumps(self.claims()).encode())
        signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"


def _malformed(good: str, rng: random.Random) -> str:
    choice = rng.randrange(8)
    if choice == 0:
        return good[: rng.randrange(1, len(good))]  # truncated
    if choice == 1:
        return ".".join(good.split(".")[:2])  # no signature segment
    if choice == 2:
        chars = list(good)
        for _ in range(rng.randint(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice("!@#$%^&*()~`'\"<>,;:{}[]|+=")
        return "".join(chars)  # not base64url
    if choice == 3:
        return "a" * rng.choice([1, 100, 7000])
    if choice == 4:
        return _b64(b'{"alg":"RS256"') + "." + _b64(b"\xff\xfe") + ".x"  # header not JSON, payload not UTF-8
    if choice == 5:
        return _b64(json.dumps([1, 2]).encode()) + "." + _b64(b"{}") + "." + _b64(b"x")  # header not an object
    if choice == 6:
        return good + "." + good  # too many segments
    return ".."


def make_kit(folder: Path, tenant: str) -> TokenKit:
    """New keys, and the key set file the server reads (``web.oauth2.jwks``)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": KID, "alg": "RS256", "use": "sig"}
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return TokenKit(key, other, path, tenant)


__all__ = ["AUDIENCE", "ISSUER", "KINDS", "TokenKit", "make_kit"]
