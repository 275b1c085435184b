"""A test certificate authority for the local stack, generated at start, never committed.

``stack up --secure`` needs a CA that clients trust (``ssl.ca.location``) and
a server certificate per service signed by it, valid for ``127.0.0.1`` and
``localhost``. Both are made with the ``cryptography`` package into
``<stack dir>/tls/`` on first use and reused afterwards; private keys are
written with mode 0600. Any service of the stack (the Kafka brokers, the
PostgreSQL server) takes its certificate from :meth:`LocalCA.issue`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dicomflow.errors import StackError

#: Validity of the generated certificates: long enough for any test run, short enough to be obviously local.
_VALID_DAYS = 30


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (0600 from the start)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate and key, as separate PEM files and as one (key first, then the chain)."""

    cert: Path
    key: Path
    #: Private key + certificate + CA certificate in one PEM file (Kafka's ``ssl.keystore.type=PEM``).
    bundle: Path


class LocalCA:
    """The stack's certificate authority in ``folder`` (``ca.pem`` public, ``ca-key.pem`` 0600)."""

    __test__ = False  # not a test class, whatever name a test module imports it under

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.cert_file = folder / "ca.pem"
        self.key_file = folder / "ca-key.pem"

    def ensure(self) -> LocalCA:
        """Create the CA on first use; reuse it afterwards.

        """
        if self.cert_file.exists() and self.key_file.exists():
            return self
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dicomflow local test CA")])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_private(self.key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self

    def issue(self, name: str, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> ServerCert:
        """A server certificate for ``hosts`` (IP addresses or DNS names), signed by this CA; reused once made.

        """
        self.ensure()
        out = ServerCert(self.folder / f"{name}.pem", self.folder / f"{name}-key.pem", self.folder / f"{name}-bundle.pem")
        if out.cert.exists() and out.key.exists() and out.bundle.exists():
            return out
        ca_key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise StackError(f"{self.key_file} is not the EC key this stack generates; remove {self.folder} to start over")
        ca_cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        _write_private(out.key, key_pem)
        out.cert.write_bytes(cert_pem)
        _write_private(out.bundle, key_pem + cert_pem + self.cert_file.read_bytes())
        return out


#: The name the PostgreSQL side uses.
TestCA = LocalCA

__all__ = ["LocalCA", "ServerCert", "TestCA"]
