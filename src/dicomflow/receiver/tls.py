"""DICOM TLS for the receiver (PS3.15 Annex B, the BCP 195 profiles of B.9 / B.10).

What a TLS listener does with a new connection, in the connection's own
thread (never the accept loop, so one silent peer cannot stall the others):
complete the TLS handshake within ``receiver.tls.handshake_timeout_s``, then
hand the encrypted socket to the DICOM Upper Layer as if it were plain TCP.

The context (:func:`server_context`):

- TLS 1.2 or newer (BCP 195 / RFC 9325: no SSL, TLS 1.0 or 1.1);
- for TLS 1.2 only the BCP 195 suites with forward secrecy and AEAD
  (ECDHE / DHE with AES-GCM); TLS 1.3 suites are all acceptable;
- no compression, no renegotiation, the server's cipher order;
- sockets that acknowledge what they read at once (:func:`~dicomflow.receiver.tcp.use_prompt_acks`);
- with ``ca_file``: a client certificate chaining to that CA is required
  (mutual TLS); without: any client may connect (server authentication only).

A handshake that fails raises :class:`TlsRefused` with a classified reason
(not TLS at all, no client certificate, an untrusted certificate, too slow)
for the log and the Security Alert audit event; the connection is closed
without a DICOM answer (on a TLS port there is no plain-text way to send one).
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Literal

from dicomflow.errors import ConfigError, ReceiverError
from dicomflow.receiver.tcp import use_prompt_acks
from dicomflow.settings import TlsSettings

log = logging.getLogger(__name__)

#: TLS 1.2 cipher suites of BCP 195 (RFC 9325 section 4.2), in OpenSSL's names.
BCP195_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "DHE-RSA-AES128-GCM-SHA256",
    "DHE-RSA-AES256-GCM-SHA384",
))

RefusalKind = Literal["not-tls", "no-certificate", "untrusted-certificate", "timeout", "handshake-failed"]

#: OpenSSL reasons meaning "the peer does not speak TLS" (plain DICOM on the TLS port).
_NOT_TLS = frozenset({
    "WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL",
    "PACKET_LENGTH_TOO_LONG", "RECORD_LENGTH_MISMATCH", "UNSUPPORTED_PROTOCOL", "VERSION_TOO_LOW",
})
_NO_CERTIFICATE = frozenset({"PEER_DID_NOT_RETURN_A_CERTIFICATE", "TLSV13_ALERT_CERTIFICATE_REQUIRED"})
_UNTRUSTED = frozenset({
    "CERTIFICATE_VERIFY_FAILED", "TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN", "TLSV1_ALERT_DECRYPT_ERROR",
})


class TlsRefused(ReceiverError):
    """A connection on a TLS listener did not complete an acceptable handshake."""

    def __init__(self, kind: RefusalKind, detail: str) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"{_DESCRIPTIONS[kind]}: {detail}")


_DESCRIPTIONS: dict[RefusalKind, str] = {
    "not-tls": "the peer does not speak TLS (plain TCP on the TLS port?)",
    "no-certificate": "the peer sent no client certificate (mutual TLS is required)",
    "untrusted-certificate": "the peer's certificate is not trusted (receiver.tls.ca_file)",
    "timeout": "the TLS handshake did not complete in time",
    "handshake-failed": "the TLS handshake failed",
}


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The server-side context for ``tls`` (see the module documentation).

    Raises:
        ConfigError: a certificate, key or CA file cannot be read or does not fit.
    """
    if tls.cert_file is None or tls.key_file is None:
        raise ConfigError("receiver.tls.cert_file", "settings", "TLS needs cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(BCP195_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE
    context.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    use_prompt_acks(context)  # its sockets acknowledge each read at once, as plain TCP ones do
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("receiver.tls.cert_file", str(tls.cert_file),
                          f"cannot load the certificate and key {tls.key_file}: {exc}") from exc
    if tls.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(tls.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("receiver.tls.ca_file", str(tls.ca_file), f"cannot load the CA certificates: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


def classify(exc: BaseException) -> TlsRefused:
    """The refusal a failed handshake amounts to."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return TlsRefused("timeout", str(exc) or "timed out")
    if isinstance(exc, ssl.SSLError):
        reason = str(getattr(exc, "reason", "") or "")
        verify = getattr(exc, "verify_message", None)
        detail = f"{reason}{f' ({verify})' if verify else ''}" or str(exc)
        if reason in _NOT_TLS:
            return TlsRefused("not-tls", detail)
        if reason in _NO_CERTIFICATE:
            return TlsRefused("no-certificate", detail)
        if reason in _UNTRUSTED:
            return TlsRefused("untrusted-certificate", detail)
        return TlsRefused("handshake-failed", detail)
    if isinstance(exc, ConnectionError | EOFError):
        return TlsRefused("handshake-failed", f"connection closed during the handshake ({exc})")
    return TlsRefused("handshake-failed", f"{type(exc).__name__}: {exc}")


class ServerTls:
    """The receiver's TLS side: one context, and the handshake for each accepted connection.

    Raises:
        ConfigError: (constructor) see :func:`server_context`.
    """

    def __init__(self, tls: TlsSettings) -> None:
        self.settings = tls
        self.context = server_context(tls)
        self.mutual = tls.ca_file is not None

    def accept(self, sock: socket.socket) -> ssl.SSLSocket:
        """Complete the server handshake on an accepted connection; return the TLS socket.

        The socket's timeout is the handshake timeout afterwards (the caller
        sets its own). On failure the connection is closed.

        Raises:
            TlsRefused: the handshake failed or took too long.
        """
        sock.settimeout(self.settings.handshake_timeout_s)
        try:
            secure = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except (OSError, ValueError) as exc:
            _close(sock)
            raise classify(exc) from exc
        try:
            secure.do_handshake()
        except (OSError, ValueError, EOFError) as exc:
            _close(secure)
            raise classify(exc) from exc
        return secure


def peer_identity(sock: socket.socket) -> str | None:
    """The subject common name of a TLS peer's verified certificate, if any (for the audit trail)."""
    if not isinstance(sock, ssl.SSLSocket):
        return None
    try:
        cert = sock.getpeercert()
    except (ValueError, OSError):
        return None
    if not cert:
        return None
    for rdn in cert.get("subject", ()):
        for pair in rdn:
            if len(pair) == 2 and pair[0] == "commonName":
                return str(pair[1])
    return None


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


__all__ = ["BCP195_CIPHERS", "ServerTls", "TlsRefused", "classify", "peer_identity", "server_context"]
