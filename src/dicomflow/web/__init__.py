"""DICOMweb on the index: QIDO-RS search, WADO-RS retrieval (with transcoding and rendering), STOW-RS
storing through the ingest core, OAuth2 and the tenant from the token.

:func:`create_app` builds the Starlette application from the settings;
``dicomflow web`` serves it with uvicorn.
"""

from dicomflow.web.app import READ_ROUTES, RouteFactory, create_app

__all__ = ["READ_ROUTES", "RouteFactory", "create_app"]
