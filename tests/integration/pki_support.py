"""Test certificates made at test time (nothing committed): a CA, a server, a trusted and an untrusted client."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    #: Signed by another CA: the receiver must refuse it.
    rogue_cert: Path
    rogue_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dicomflow tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey,
          *, ca: bool = False, server: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                                        critical=False)
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)

    def pem(cert: x509.Certificate, name: str) -> Path:
        path = folder / name
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    def key(name: str) -> tuple[ec.EllipticCurvePrivateKey, Path]:
        k = ec.generate_private_key(ec.SECP256R1())
        path = folder / name
        _write_key(k, path)
        return k, path

    ca_key, _ = key("ca.key")
    ca = _cert("dicomflow test CA", ca_key, _name("dicomflow test CA"), ca_key, ca=True)
    rogue_ca_key, _ = key("rogue-ca.key")
    rogue_ca = _cert("rogue CA", rogue_ca_key, _name("rogue CA"), rogue_ca_key, ca=True)
    server_key, server_key_path = key("server.key")
    client_key, client_key_path = key("client.key")
    rogue_key, rogue_key_path = key("rogue.key")
    return Pki(
        ca_cert=pem(ca, "ca.pem"),
        server_cert=pem(_cert("dicomflow receiver", server_key, ca.subject, ca_key, server=True), "server.pem"),
        server_key=server_key_path,
        client_cert=pem(_cert("MODALITY-1", client_key, ca.subject, ca_key), "client.pem"),
        client_key=client_key_path,
        rogue_cert=pem(_cert("MODALITY-1", rogue_key, rogue_ca.subject, rogue_ca_key), "rogue.pem"),
        rogue_key=rogue_key_path,
    )


def client_context(pki: Pki, *, rogue: bool = False, certificate: bool = True) -> ssl.SSLContext:
    """A client context trusting the test CA, presenting the client (or rogue, or no) certificate."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca_cert))
    context.check_hostname = False
    if certificate:
        if rogue:
            context.load_cert_chain(str(pki.rogue_cert), str(pki.rogue_key))
        else:
            context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


__all__ = ["Pki", "client_context", "make_pki"]
