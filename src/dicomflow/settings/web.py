"""The sections of the DICOMweb server and the image workers: ``[web]``, ``[web.oauth2]``, ``[web.viewer]``, ``[images]``.

Part of the schema (:mod:`.schema` holds them in :class:`~dicomflow.settings.schema.Settings`);
in a module of their own to keep the schema's file short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class OAuth2Settings:
    """How ``dicomflow web`` checks bearer tokens (``[web.oauth2]``).

    ``jwks`` is a file path or an ``https://`` URL of the issuer's JSON Web
    Key Set (fetched on first use and cached); ``tenant_claim`` names the
    token claim carrying the tenant id. Scopes are matched against the
    token's ``scope`` (space separated) or ``scp`` (list) claim.
    """

    jwks: str = ""
    issuer: str = ""
    audience: str = ""
    tenant_claim: str = "tenant"
    read_scope: str = "dicomweb.read"
    write_scope: str = "dicomweb.write"


@dataclass(frozen=True)
class ViewerSettings:
    """The OHIF viewer ``dicomflow web`` serves at ``/viewer/`` (``[web.viewer]``).

    On by default: the local stack (``dicomflow stack up``) installs OHIF's
    built ``dist/`` into its cache, and the server serves it from there.
    ``[web] viewer = false`` (shorthand for ``[web.viewer] enabled = false``;
    TOML cannot hold both a ``viewer`` key and a ``[web.viewer]`` table, so
    beside the table write ``enabled``) turns both off. With ``web.auth =
    "oauth2"`` the viewer logs in at ``oidc_authority`` (an OpenID Connect
    issuer) as ``client_id``, asking for ``scope``; left empty, the viewer
    sends no login and a token must come another way (``?token=``).
    """

    enabled: bool = True
    #: OHIF's built ``dist/`` folder; unset: the local stack's ``<stack.dir>/cache/ohif-<stack.ohif_version>/dist``.
    dist: Path | None = None
    oidc_authority: str = ""
    client_id: str = ""
    scope: str = "openid dicomweb.read"


@dataclass(frozen=True)
class WebSettings:
    """The DICOMweb server (``[web]``): QIDO-RS, WADO-RS, STOW-RS.

    ``auth = "none"`` turns authentication off (every caller is the storage's
    default tenant); it must be chosen explicitly and is warned about at start.
    """

    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    auth: Literal["oauth2", "none"] = "oauth2"
    #: Largest STOW-RS request body accepted, in bytes.
    max_stow_bytes: int = 2 * 1024 * 1024 * 1024
    #: Most results one QIDO-RS answer holds: a larger ``limit`` is clamped to it, with a ``Warning: 299``.
    max_limit: int = 1000
    #: PostgreSQL connections each server process keeps open, and at most opens.
    db_pool_min: int = 1
    db_pool_max: int = 4
    #: Longest a request waits for a PostgreSQL connection before it answers 503 with ``Retry-After``.
    db_wait_ms: int = 1000
    #: Origins (``https://viewer.example``) whose pages may call the server from a browser (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    oauth2: OAuth2Settings = field(default_factory=OAuth2Settings)
    viewer: ViewerSettings = field(default_factory=ViewerSettings)


@dataclass(frozen=True)
class ImagesSettings:
    """The image workers (``dicomflow images``): series thumbnails and NeedTransfer copies."""

    group_id: str = "dicomflow-images"
    batch_max_messages: int = 50
    batch_max_ms: int = 500
    #: Thumbnails fit into this many pixels square (JPEG).
    thumbnail_size: int = 128
    session_timeout_ms: int = 10000
    max_poll_interval_ms: int = 300000


__all__ = ["ImagesSettings", "OAuth2Settings", "ViewerSettings", "WebSettings"]
