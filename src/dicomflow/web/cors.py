"""CORS (``[web] cors_origins``): browsers on the listed origins may call the server, with credentials.

Starlette's :class:`~starlette.middleware.cors.CORSMiddleware` answers the
preflight and adds the headers, configured for DICOMweb: the methods the
server has (GET, HEAD, POST for STOW-RS), the request headers a DICOMweb
client sends (``Authorization``, ``Accept``, ``Content-Type``, ``Range``,
conditional headers) and the answer headers a client reads (``Content-Location``,
``Warning``, ``WWW-Authenticate``, ``Retry-After`` ...). The origin is echoed,
never ``*``: with credentials a browser refuses ``*``, and an explicit list is
what ``cors_origins`` says.

Only a request whose ``Origin`` is listed reaches that middleware: Starlette
alone adds ``Access-Control-Allow-Credentials`` and ``-Expose-Headers`` to
every answer that has an ``Origin``, and answers another origin's preflight
itself (400 with its allow lists). Here another origin gets no CORS header at
all: its requests are served as if no ``Origin`` were sent (a preflight is
then the route's 405), and the browser keeps the answer from the page.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

METHODS = ("GET", "HEAD", "POST", "OPTIONS")
REQUEST_HEADERS = ("Authorization", "Accept", "Content-Type", "Range", "If-None-Match", "If-Modified-Since",
                   "Cache-Control")
ANSWER_HEADERS = ("Content-Type", "Content-Length", "Content-Location", "Content-Range", "Accept-Ranges",
                  "ETag", "Last-Modified", "Location", "Warning", "WWW-Authenticate", "Retry-After")


class Cors:
    """ASGI middleware: CORS for ``origins`` only (see the module)."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.cors = CORSMiddleware(app, allow_origins=tuple(origins), allow_methods=METHODS,
                                   allow_headers=REQUEST_HEADERS, allow_credentials=True,
                                   expose_headers=ANSWER_HEADERS, max_age=600)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and Headers(scope=scope).get("origin") in self.origins:
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)


__all__ = ["Cors"]
