"""What follows from the settings without being a setting: where the viewer's files are, what an origin is."""

from __future__ import annotations

from pathlib import Path

from dicomflow.settings.schema import Settings


def ohif_dist(settings: Settings) -> Path:
    """The OHIF viewer's built files: ``web.viewer.dist``, else the local stack's cache (where ``stack up`` puts them)."""
    if settings.web.viewer.dist is not None:
        return settings.web.viewer.dist
    return settings.stack.dir / "cache" / f"ohif-{settings.stack.ohif_version}" / "dist"


def is_origin(text: str) -> bool:
    """``https://host[:port]`` as a browser sends it in ``Origin``: no path, no wildcard."""
    scheme, sep, rest = text.partition("://")
    return bool(sep) and scheme in ("http", "https") and bool(rest) and not any(c in rest for c in "/*?# ")


__all__ = ["is_origin", "ohif_dist"]
