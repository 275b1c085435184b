"""Helpers of the DICOMweb tests: a real uvicorn server, real tokens, a real Orthanc with its DICOMweb plugin."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from dicomflow.settings import OAuth2Settings, Settings
from dicomflow.stack import free_port

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ISSUER = "https://idp.test.invalid/"
AUDIENCE = "dicomflow-test"




@dataclass
class Keys:
    """Signing keys made at test time, their JWKS file, and a token minter."""

    rsa: Any
    ec: Any
    other: Any  # a key the server does not know (bad signature)
    jwks_path: Path

    def token(self, *, tenant: str | None = "default", scope: str = "dicomweb.read dicomweb.write",
              audience: str = AUDIENCE, expires_in: int = 300, key: str = "rsa", sub: str = "alice") -> str:
        claims: dict[str, Any] = {"iss": ISSUER, "aud": audience, "sub": sub, "scope": scope,
                                  "exp": int(time.time()) + expires_in, "iat": int(time.time()) - 5}
        if tenant is not None:
            claims["tenant"] = tenant
        if key == "ec":
            return jwt.encode(claims, self.ec, algorithm="ES256", headers={"kid": "ec-1"})
        if key == "other":
            return jwt.encode(claims, self.other, algorithm="RS256", headers={"kid": "rsa-1"})
        return jwt.encode(claims, self.rsa, algorithm="RS256", headers={"kid": "rsa-1"})


def make_keys(folder: Path) -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks = {"keys": [
        {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key())), "kid": "rsa-1", "alg": "RS256", "use": "sig"},
        {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key())), "kid": "ec-1", "alg": "ES256", "use": "sig"},
    ]}
    path = folder / "jwks.json"
    path.write_text(json.dumps(jwks))
    return Keys(rsa_key, ec_key, other, path)


def oauth2_settings(settings: Settings, keys: Keys, port: int) -> Settings:
    oauth2 = OAuth2Settings(jwks=str(keys.jwks_path), issuer=ISSUER, audience=AUDIENCE, tenant_claim="tenant")
    web = dataclasses.replace(settings.web, host="127.0.0.1", port=port, auth="oauth2", oauth2=oauth2)
    return dataclasses.replace(settings, web=web)


@contextmanager
def running_web(settings: Settings) -> Iterator[str]:
    """The DICOMweb app on uvicorn in a thread of the test process; yields its base URL."""
    import uvicorn

    from dicomflow.web import create_app

    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.web.port, log_level="warning",
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="web-under-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the web server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{settings.web.port}"
    finally:
        server.should_exit = True
        thread.join(30)


class Orthanc:
    """Orthanc with its DICOMweb plugin on 127.0.0.1 (its own folder, default SQLite index)."""

    def __init__(self, work: Path) -> None:
        self.http = free_port()
        self.folder = work / f"orthanc-{uuid.uuid4().hex[:8]}"
        self.folder.mkdir(parents=True)
        config = {
            "Name": "dicomflow-test", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "index"), "DicomServerEnabled": False, "DicomPort": free_port(),
            "HttpPort": self.http, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "StorageCompression": False, "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Ssl": False,
                         "StudiesMetadata": "Full", "SeriesMetadata": "Full"},
            "HttpThreadsCount": 4,
        }
        (self.folder / "config.json").write_text(json.dumps(config))
        self.log = (self.folder / "orthanc.log").open("wb")
        self.process = subprocess.Popen([ORTHANC, str(self.folder / "config.json")], stdout=self.log,
                                        stderr=self.log, cwd=self.folder)
        deadline = time.monotonic() + 60
        while not self._alive():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"Orthanc did not start: {(self.folder / 'orthanc.log').read_text()[-2000:]}")
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def _alive(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/system", timeout=2):
                return True
        except OSError:
            return False

    def load(self, paths: list[Path]) -> int:
        """POST each file to /instances; returns how many Orthanc accepted."""
        ok = 0
        for path in paths:
            request = urllib.request.Request(f"{self.url}/instances", data=path.read_bytes(), method="POST",
                                             headers={"Content-Type": "application/dicom"})
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    ok += response.status == 200
            except OSError:
                pass
        return ok

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)
