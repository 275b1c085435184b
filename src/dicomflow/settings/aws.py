"""The standard AWS configuration as fallbacks of ``[storage.s3]``.

A deployment that already has ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(or a profile in ``~/.aws/credentials``) need not repeat them: each
``storage.s3`` field left unset by the config file and the ``DICOMFLOW_*``
variables takes, in this order of preference:

- ``endpoint``: ``AWS_ENDPOINT_URL_S3``, then ``AWS_ENDPOINT_URL``;
- ``region``: ``AWS_REGION``, then ``AWS_DEFAULT_REGION``;
- ``access_key_id`` / ``secret_access_key``: ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` (both or neither), then the profile
  ``AWS_PROFILE`` (default ``default``) of the credentials file
  ``AWS_SHARED_CREDENTIALS_FILE`` (default ``$HOME/.aws/credentials``).

Like every source, the environment is passed in: nothing here reads
``os.environ``.
"""

from __future__ import annotations

import configparser
from collections.abc import Mapping
from pathlib import Path

from dicomflow.errors import ConfigError


def aws_fallbacks(env: Mapping[str, str]) -> dict[str, str]:
    """``storage.s3.*`` values from the AWS variables and credentials file of ``env``.

    Raises:
        ConfigError: the credentials file exists but cannot be parsed.
    """
    out: dict[str, str] = {}
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        out["storage.s3.endpoint"] = endpoint
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        out["storage.s3.region"] = region
    key, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
    if not (key and secret):
        key, secret = _from_credentials_file(env)
    if key and secret:
        out["storage.s3.access_key_id"] = key
        out["storage.s3.secret_access_key"] = secret
    return out


def _from_credentials_file(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    explicit = env.get("AWS_SHARED_CREDENTIALS_FILE")
    if explicit:
        path = Path(explicit).expanduser()
    elif env.get("HOME"):
        path = Path(env["HOME"]) / ".aws" / "credentials"
    else:
        return None, None
    if not path.is_file():
        return None, None
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError) as exc:
        raise ConfigError("<credentials>", str(path), f"cannot read the AWS credentials file: {exc}") from exc
    profile = env.get("AWS_PROFILE") or "default"
    if not parser.has_section(profile):
        return None, None
    section = parser[profile]
    return section.get("aws_access_key_id"), section.get("aws_secret_access_key")


__all__ = ["aws_fallbacks"]
