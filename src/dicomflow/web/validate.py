"""Request values checked before any route sees them, and request text made safe for a response header.

:class:`RequestValidation` is an ASGI middleware in front of every route
(QIDO-RS, WADO-RS, STOW-RS, the viewer, ``/healthz``, ``/metrics``), so no
route can forget it. It answers 400, naming what is wrong, when

* a query parameter's name or value (after percent-decoding, as the routes
  read them) holds a control character (Unicode category ``Cc``: NUL, the
  other C0 controls, DEL and the C1 controls). PostgreSQL text cannot hold
  NUL at all (a NUL in ``PatientID`` was a 500 with psycopg's
  ``DataError``), and no DICOM value a client matches on contains any of
  them;
* the decoded path holds one (every path parameter: the UID segments also
  pass the one UID rule, :func:`dicomflow.web.context.check_uid`, in their
  routes);
* the ``Host`` header is not ``host[:port]`` (a DNS name, an IPv4 address
  or a bracketed IPv6 address): it becomes the base of every RetrieveURL and
  of the ``Content-Location`` of WADO-RS parts, and Starlette's URL parser
  raises on some malformed hosts (``[``), which was a 500.

Response headers never carry request text unchecked: what a header must
say about the request goes through :func:`header_text` (printable ASCII, no
quotes or backslashes, bounded), or is a number or a UID that passed its
rule.
"""

from __future__ import annotations

import re
import unicodedata

from starlette.datastructures import QueryParams
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: ``host[:port]``: a DNS name or IPv4 address, or a bracketed IPv6 address.
_HOST = re.compile(r"(?:[A-Za-z0-9_](?:[A-Za-z0-9_.\-]*)|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
#: Characters allowed in header text built from a message: printable ASCII except ``"`` and ``\``.
_UNSAFE_IN_HEADER = re.compile(r'[^\x20-\x7e]|["\\]')


def control_problem(text: str) -> str | None:
    """Why ``text`` cannot be used (its first control character and where), or None."""
    for index, char in enumerate(text):
        if unicodedata.category(char) == "Cc":
            return f"contains the control character U+{ord(char):04X} at position {index + 1}"
    return None


def query_problem(query_string: bytes) -> str | None:
    """The first query parameter with a control character in its name or value, named; or None.

    The string is decoded exactly as the routes decode it (Starlette's
    :class:`~starlette.datastructures.QueryParams`: ``%00`` is a NUL).
    """
    for name, value in QueryParams(query_string).multi_items():
        problem = control_problem(name)
        if problem is not None:
            return f"query parameter name {name[:80]!a} {problem}"
        problem = control_problem(value)
        if problem is not None:
            return f"query parameter {name[:80]!a}: the value {problem}"
    return None


def host_problem(host: str) -> str | None:
    """Why a ``Host`` header is refused, or None (an empty one is left to the server's own address)."""
    if host and not _HOST.fullmatch(host):
        return f"the Host header {host[:80]!a} is not host[:port]"
    return None


def request_problem(scope: Scope) -> str | None:
    """The first thing wrong with an HTTP request's path, query or Host header, or None."""
    problem = control_problem(str(scope.get("path", "")))
    if problem is not None:
        return f"the path {problem}"
    problem = query_problem(scope.get("query_string", b""))
    if problem is not None:
        return problem
    for name, value in scope.get("headers", ()):
        if name == b"host":
            return host_problem(value.decode("latin-1"))
    return None


def header_text(text: str, limit: int = 200) -> str:
    """``text`` fit for a quoted header parameter: printable ASCII, no ``"`` or ``\\``, at most ``limit`` long."""
    return _UNSAFE_IN_HEADER.sub("?", text)[:limit]


class RequestValidation:
    """ASGI middleware: a request whose path, query or Host fails :func:`request_problem` is answered 400."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = request_problem(scope)
            if problem is not None:
                await PlainTextResponse(f"{problem}\n", status_code=400)(scope, receive, send)
                return
        await self.app(scope, receive, send)


__all__ = ["RequestValidation", "control_problem", "header_text", "host_problem", "query_problem", "request_problem"]
