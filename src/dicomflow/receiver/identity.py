"""DICOM User Identity negotiation (PS3.7 Annex D.3.3.7) and the receiver's users file.

A requestor may put a User Identity sub-item (0x58) into the user
information of its A-ASSOCIATE-RQ: a type (1 username, 2 username and
passcode, 3 Kerberos, 4 SAML, 5 JWT), a "positive response requested" flag
and one or two fields. The receiver:

- records the username in the audit trail (the requestor's participant of
  every event of the association);
- with ``receiver.users_file`` set, checks a username/passcode (type 2)
  against it, and rejects the association when it does not match;
- with ``receiver.require_user_identity``, rejects an association that brings
  no valid username/passcode at all;
- answers a verified identity with a User Identity sub-item (0x59, empty
  server response: PS3.7 defines none for types 1 and 2) when the requestor
  asked for a positive response.

A refusal is an A-ASSOCIATE-RJ, rejected-permanent, source "DICOM UL
service-provider (ACSE related function)", reason no-reason-given (the
standard's answer to an authorisation failure), plus a User Authentication
(110114 / Login 110122) failure in the audit trail naming the username.

The users file holds one ``username:scrypt$N$r$p$salt$hash`` line per user
(salt and hash base64, ``hashlib.scrypt``): never a password in plain text.
``dicomflow users add NAME`` writes it (mode 0600).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from dicomflow.errors import ConfigError
from dicomflow.settings import ReceiverSettings

log = logging.getLogger(__name__)

USERNAME = 1
USERNAME_AND_PASSCODE = 2
_TYPE_NAMES = {1: "username", 2: "username and passcode", 3: "Kerberos ticket", 4: "SAML assertion", 5: "JSON web token"}

#: scrypt cost: 16 MiB and ~50 ms per check, once per association.
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
#: Longest username kept (the audit participant's user name).
MAX_USERNAME = 64

_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class UserIdentity:
    """A User Identity sub-item (0x58) as the requestor sent it."""

    kind: int
    positive_response_requested: bool
    primary: bytes
    secondary: bytes = b""

    @property
    def username(self) -> str | None:
        """The username of a type 1 or 2 identity (UTF-8), else None."""
        if self.kind not in (USERNAME, USERNAME_AND_PASSCODE):
            return None
        return self.primary.decode("utf-8", "replace").strip()[:MAX_USERNAME] or None


def parse_user_identity(value: bytes) -> UserIdentity:
    """Decode the value of a User Identity sub-item (the bytes after its 4-byte header).

    Raises:
        ValueError: the field lengths do not fit the item.
    """
    if len(value) < 4:
        raise ValueError(f"user identity sub-item of {len(value)} bytes is shorter than 4")
    kind, response = value[0], value[1]
    (primary_length,) = _U16.unpack_from(value, 2)
    end = 4 + primary_length
    if end > len(value):
        raise ValueError("user identity primary field runs past the item")
    primary = bytes(value[4:end])
    secondary = b""
    if len(value) >= end + 2:
        (secondary_length,) = _U16.unpack_from(value, end)
        if end + 2 + secondary_length > len(value):
            raise ValueError("user identity secondary field runs past the item")
        secondary = bytes(value[end + 2:end + 2 + secondary_length])
    return UserIdentity(kind, response == 1, primary, secondary)


def encode_response_item(server_response: bytes = b"") -> bytes:
    """The User Identity sub-item of an A-ASSOCIATE-AC (0x59)."""
    body = _U16.pack(len(server_response)) + server_response
    return struct.pack(">BxH", 0x59, len(body)) + body


# --------------------------------------------------------------------------- password hashes


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$N$r$p$salt$hash`` of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password.encode("utf-8"), salt, n, r, p)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: bytes, encoded: str) -> bool:
    """True when ``password`` matches the ``scrypt$...`` hash (constant-time compare); False when malformed."""
    try:
        scheme, n, r, p, salt, digest = encoded.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest, validate=True)
        actual = _scrypt(password, base64.b64decode(salt, validate=True), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int = _HASH_BYTES) -> bytes:
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=256 * r * n * p + (1 << 20))


#: Checked when the username is unknown, so a probe cannot tell unknown names by timing.
_DUMMY_HASH = "scrypt${}${}${}${}${}".format(
    SCRYPT_N, SCRYPT_R, SCRYPT_P, base64.b64encode(b"\0" * _SALT_BYTES).decode(),
    base64.b64encode(b"\0" * _HASH_BYTES).decode())


class UsersFile:
    """``username:hash`` lines, re-read when the file changes (users can be added without a restart).

    Raises:
        ConfigError: (constructor and :meth:`verify`) the file cannot be read or has a malformed line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._users: dict[str, str] = {}
        self._load()

    def _load(self) -> None:
        try:
            stat = os.stat(self.path)
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError("receiver.users_file", str(self.path), f"cannot read: {exc.strerror or exc}") from exc
        self._users = parse_users(text, str(self.path))
        self._stamp = stamp

    def verify(self, username: str, password: bytes) -> bool:
        with self._lock:
            self._load()
            encoded = self._users.get(username)
        if encoded is None:
            verify_password(password, _DUMMY_HASH)
            return False
        return verify_password(password, encoded)


def parse_users(text: str, source: str) -> dict[str, str]:
    """``{username: hash}`` of a users file's text (blank lines and ``#`` comments skipped).

    Raises:
        ConfigError: a line is not ``username:scrypt$...``.
    """
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, encoded = line.rpartition(":")
        if not sep or not name or not encoded.startswith("scrypt$") or encoded.count("$") != 5:
            raise ConfigError("receiver.users_file", f"{source}:{number}", "expected username:scrypt$N$r$p$salt$hash")
        users[name] = encoded
    return users


def add_user(path: Path, username: str, password: str) -> bool:
    """Add ``username`` to the users file or change its password; True when it was new.

    The file is rewritten atomically with mode 0600 (created if missing).

    Raises:
        ValueError: the username is empty, too long or contains ``:`` or a line break.
        ConfigError: the existing file is malformed.
    """
    if not username or len(username) > MAX_USERNAME or any(c in username for c in ":\r\n"):
        raise ValueError(f"a username has 1-{MAX_USERNAME} characters and no ':' or line break")
    users = parse_users(path.read_text(encoding="utf-8"), str(path)) if path.exists() else {}
    new = username not in users
    users[username] = hash_password(password)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}:{encoded}\n" for name, encoded in users.items()))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return new


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Verdict:
    """What the receiver makes of an association's user identity."""

    ok: bool
    #: The username for the audit trail (asserted, or verified when ``verified``).
    username: str | None = None
    verified: bool = False
    #: Why it is refused (for the log and the audit event).
    reason: str = ""
    #: The 0x59 sub-item to add to the A-ASSOCIATE-AC (empty: none).
    response_item: bytes = b""


class IdentityPolicy:
    """``receiver.require_user_identity`` and ``receiver.users_file`` applied to one request.

    Raises:
        ConfigError: (constructor) the users file cannot be read.
    """

    def __init__(self, receiver: ReceiverSettings) -> None:
        self.required = receiver.require_user_identity
        self.users = UsersFile(receiver.users_file) if receiver.users_file is not None else None

    def check(self, identity: UserIdentity | None) -> Verdict:
        """Accept or refuse (never raises; a users file gone bad refuses, with the reason)."""
        if identity is None:
            if self.required:
                return Verdict(False, reason="no user identity sent (receiver.require_user_identity)")
            return Verdict(True)
        username = identity.username
        if identity.kind == USERNAME_AND_PASSCODE and self.users is not None:
            try:
                good = self.users.verify(username or "", identity.secondary)
            except ConfigError as exc:
                log.error("cannot check a password: %s", exc)
                return Verdict(False, username, reason=f"users file unusable: {exc}")
            if not good:
                return Verdict(False, username, reason=f"wrong username or password for user {username!r}")
            response = encode_response_item() if identity.positive_response_requested else b""
            return Verdict(True, username, verified=True, response_item=response)
        if self.required:
            kind = _TYPE_NAMES.get(identity.kind, f"type {identity.kind}")
            return Verdict(False, username, reason=f"user identity of type {kind} cannot be checked; "
                                                  "a username and password is required")
        return Verdict(True, username)


__all__ = [
    "IdentityPolicy",
    "UserIdentity",
    "UsersFile",
    "Verdict",
    "add_user",
    "encode_response_item",
    "hash_password",
    "parse_user_identity",
    "verify_password",
]
