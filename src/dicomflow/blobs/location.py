"""Keys and locations: what a store event names, and the checks before any byte is touched.

A *key* is the store-relative name of an object, the same on both backends
(``tenant/20240101/<study>/<series>/<sop>.dcm``). A *location* is what a store
event carries: the file's path for ``filesystem`` (``<root>/<key>``), and
``s3://<bucket>/<prefix><key>`` for ``s3``.

A location read from a message is untrusted: :func:`check_key`,
:func:`key_of_path` and :func:`key_of_s3` refuse anything that could reach
outside the store (``..`` segments, absolute keys, another bucket, a key
outside the configured prefix), with :class:`~.errors.BlobLocationError`.
"""

from __future__ import annotations

import os
from pathlib import Path

from dicomflow.blobs.errors import BlobLocationError

#: S3's limit for a key, in UTF-8 bytes.
MAX_KEY_BYTES = 1024


def check_key(key: str) -> str:
    """``key`` if it is a safe store-relative name; the same rule on both backends.

    Raises:
        BlobLocationError: empty, absolute, longer than 1024 bytes, a NUL or a
            backslash, or an empty, ``.`` or ``..`` segment.
    """
    problem = _key_problem(key)
    if problem:
        raise BlobLocationError(repr(key)[:200], problem)
    return key


def _key_problem(key: str) -> str:
    if not key:
        return "empty key"
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        return f"longer than {MAX_KEY_BYTES} bytes"
    if "\x00" in key or "\\" in key:
        return "NUL or backslash in the key"
    if key.startswith("/"):
        return "absolute key (must be relative to the store)"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "empty, '.' or '..' segment"
    return ""


def normalize_prefix(prefix: str) -> str:
    """A key prefix as stored: ``""`` or segments ending in ``/`` (``archive`` → ``archive/``).

    Raises:
        BlobLocationError: the prefix holds a segment :func:`check_key` refuses.
    """
    stripped = prefix.strip("/")
    if not stripped:
        return ""
    check_key(stripped)
    return stripped + "/"


def s3_location(bucket: str, prefix: str, key: str) -> str:
    """``s3://bucket/<prefix><key>`` (``prefix`` as :func:`normalize_prefix` gives it)."""
    return f"s3://{bucket}/{prefix}{check_key(key)}"


def key_of_s3(location: str, bucket: str, prefix: str) -> str:
    """The key an ``s3://`` location names in ``bucket`` under ``prefix``.

    Raises:
        BlobLocationError: not ``s3://``, another bucket, outside the prefix, or
            a key :func:`check_key` refuses.
    """
    scheme, sep, rest = location.partition("://")
    if not sep or scheme != "s3":
        raise BlobLocationError(location[:200], "not an s3:// location")
    found_bucket, _, full_key = rest.partition("/")
    if found_bucket != bucket:
        raise BlobLocationError(location[:200], f"bucket {found_bucket!r} is not the configured {bucket!r}")
    if not full_key.startswith(prefix):
        raise BlobLocationError(location[:200], f"key outside the configured prefix {prefix!r}")
    key = full_key[len(prefix):]
    problem = _key_problem(key) or _key_problem(full_key)
    if problem:
        raise BlobLocationError(location[:200], problem)
    return key


def key_of_path(location: str | Path, root: Path) -> str:
    """The key a file path names under the storage root ``root``.

    A relative path is taken from the current directory, as the writer did.
    Symbolic links are not followed (no ``resolve()``): a ``..`` anywhere is
    refused rather than normalised away.

    Raises:
        BlobLocationError: a ``..`` segment, a path outside ``root``, or the root itself.
    """
    text = os.fspath(location)
    if ".." in text.split("/"):
        raise BlobLocationError(text[:200], "'..' in the path")
    # strings, not pathlib: a retrieve asks this once per instance sent, and Path parsing was ~100 us of it
    path, base = os.path.abspath(text), os.path.abspath(root)
    inside = base if base.endswith("/") else base + "/"
    if path != base and not path.startswith(inside):
        raise BlobLocationError(text[:200], f"outside the storage root {base}")
    key = path[len(inside):]
    problem = "the storage root itself" if key in ("", ".") else _key_problem(key)
    if problem:
        raise BlobLocationError(text[:200], problem)
    return key


__all__ = ["MAX_KEY_BYTES", "check_key", "key_of_path", "key_of_s3", "normalize_prefix", "s3_location"]
