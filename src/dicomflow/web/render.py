"""Rendered and thumbnail images: the pixel work lives in :mod:`dicomflow.imaging.render` (shared with ``images/``)."""

from dicomflow.imaging.render import (
    MAX_VIEWPORT,
    THUMBNAIL_SIZE,
    Format,
    RenderError,
    RenderOptions,
    RenderParameterError,
    parse_options,
    render,
)

__all__ = ["MAX_VIEWPORT", "THUMBNAIL_SIZE", "Format", "RenderError", "RenderOptions", "RenderParameterError",
           "parse_options", "render"]
