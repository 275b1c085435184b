"""The OHIF viewer at ``/viewer/``: OHIF's built files, and an ``app-config.js`` pointing at this server.

The files are npm ``@ohif/app``'s ``dist/`` (installed by ``dicomflow stack
up``, or wherever ``web.viewer.dist`` says; see
:func:`dicomflow.settings.ohif_dist`). That build expects to live at ``/``:
its ``index.html`` names every asset as ``/...``, it sets
``window.PUBLIC_URL = "/"``, each webpack runtime loads its chunks from
``__webpack_require__.p = "/"``, the stylesheet's fonts are ``url(/...)`` and
the web manifest's icons ``"/assets/..."``.
Those few absolute paths are rewritten to ``/viewer/`` when the file is
first served (once per process and file, kept in memory: the main bundle is
17 MB) and ``routerBasename`` is ``/viewer/``; every other file is sent as
it is. Text, scripts and WebAssembly go out gzip-compressed to a client that
accepts it (the 17 MB main bundle is about 4 MB so; 172 MB of such files
are 41 MB): each file is compressed when it is first asked for and the
compressed copy kept in memory (at most the compressed build, ~41 MB,
once per process). A path without a file extension that is not a file (``/viewer/``,
``/viewer/viewer?StudyInstanceUIDs=...``, ``/viewer/callback``) is one of
OHIF's client-side routes and gets ``index.html``; a missing file is 404.

``app-config.js`` is made per request: one DICOMweb data source whose QIDO,
WADO-RS and WADO-URI roots are the page's own origin (this server, or the
proxy in front of it), with what this server answers (``includefield``,
``*`` / ``?`` wildcards, fuzzy matching of names: see :mod:`dicomflow.web.qido`)
and thumbnails drawn by the viewer from the frame it fetches anyway
(``thumbnailRendering = "wadors"``: a frame answered in 4.9-5.2 ms p50 here
against 6.0-10.7 ms for the server's JPEG ``/thumbnail`` of the same CT and MR
instance, and the frame is then in the viewer's image cache). With ``web.auth =
"oauth2"`` and ``web.viewer.oidc_authority`` set it carries OHIF's ``oidc``
block, so the viewer logs the user in (authorization code with PKCE) and
sends the access token with every request.

Nothing here needs a token: the viewer must load before it can log in, and
its files and configuration hold no secret (an OIDC client id is public).
"""

from __future__ import annotations

import gzip
import json
import logging
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from dicomflow.settings import Settings, ohif_dist
from dicomflow.web.context import WebContext
from dicomflow.web.metadata import accepts_gzip

log = logging.getLogger(__name__)

#: Where the viewer is served; OHIF's ``routerBasename`` and ``PUBLIC_URL``.
BASE = "/viewer/"

#: Absolute paths of the root-based build, per kind of file, and what they become under :data:`BASE`.
_REWRITES: dict[str, tuple[tuple[re.Pattern[bytes], bytes], ...]] = {
    ".html": ((re.compile(rb'((?:href|src)=")/(?!/)'), rb"\1" + BASE.encode()),
              (re.compile(rb'window\.PUBLIC_URL="/"'), b'window.PUBLIC_URL="' + BASE.encode() + b'"')),
    ".js": ((re.compile(rb'__webpack_require__\.p = "/";'), b'__webpack_require__.p = "' + BASE.encode() + b'";'),),
    ".css": ((re.compile(rb"url\(/(?!/)"), b"url(" + BASE.encode()),),
    ".json": ((re.compile(rb'(":\s*")/(?!/)'), rb"\1" + BASE.encode()),),  # manifest.json's icons
}

#: Files worth compressing (the others, images and fonts, are compressed already), and the smallest worth it.
_GZIP_SUFFIXES = frozenset({".html", ".js", ".mjs", ".css", ".json", ".jsonc", ".map", ".svg", ".wasm", ".xml", ".txt"})
_GZIP_MIN_BYTES = 1024
#: zlib level 6: the 17 MB bundle in ~0.5 s, once; level 1 is 3x faster and 20 % bigger.
_GZIP_LEVEL = 6

#: Cache-Control of the files: the entry points are asked again each time, the rest (content-hashed names) kept.
_NO_CACHE = "no-cache"
_KEEP = "public, max-age=86400"


def viewer_url(settings: Settings, study_uid: str) -> str:
    """The address of one study in the viewer, on the server ``settings.web`` describes (for people to open)."""
    host = settings.web.host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"  # listening everywhere: this machine's own address is one of them
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.web.port}{BASE}viewer?StudyInstanceUIDs={quote(study_uid, safe='')}"


def app_config(settings: Settings) -> dict[str, object]:
    """OHIF's ``window.config`` for this server; the data source's roots are filled in by the page (its origin)."""
    source = {
        "friendlyName": "dicomflow", "name": "dicomflow",
        "qidoRoot": "", "wadoRoot": "", "wadoUriRoot": "",
        "qidoSupportsIncludeField": True, "supportsFuzzyMatching": True, "supportsWildcard": True,
        "imageRendering": "wadors", "thumbnailRendering": "wadors", "thumbnailRequestStrategy": "fetch",
        "enableStudyLazyLoad": True, "staticWado": False, "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True, "dicomUploadEnabled": False,
    }
    config: dict[str, object] = {
        "routerBasename": BASE, "showStudyList": True, "extensions": [], "modes": [], "customizationService": {},
        "maxNumberOfWebWorkers": 3, "showWarningMessageForCrossOrigin": False, "showCPUFallbackMessage": True,
        "showLoadingIndicator": True, "strictZSpacingForVolumeViewport": True, "showErrorDetails": "always",
        "investigationalUseDialog": {"option": "never"},
        "defaultDataSourceName": "dicomflow",
        "dataSources": [{"namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                         "sourceName": "dicomflow", "configuration": source}],
    }
    viewer = settings.web.viewer
    if settings.web.auth == "oauth2" and viewer.oidc_authority:
        config["oidc"] = [{
            "authority": viewer.oidc_authority, "client_id": viewer.client_id, "scope": viewer.scope,
            "response_type": "code", "redirect_uri": "/callback", "silent_redirect_uri": "/silent-refresh.html",
            "post_logout_redirect_uri": "/", "automaticSilentRenew": True, "revokeAccessTokenOnSignout": True,
        }]
    return config


def app_config_js(settings: Settings) -> str:
    """``app-config.js``: :func:`app_config` as ``window.config``, its DICOMweb roots the page's own origin."""
    return (
        "// Made by dicomflow web for this server (dicomflow.web.viewer); not a file of the OHIF build.\n"
        f"window.config = {json.dumps(app_config(settings), indent=2)};\n"
        "(function (source) {\n"
        "  source.qidoRoot = source.wadoRoot = source.wadoUriRoot = window.location.origin;\n"
        "})(window.config.dataSources[0].configuration);\n"
    )


@dataclass
class _Kept:
    """What is kept of one served file, valid while its modification time and size stay."""

    mtime_ns: int
    size: int
    body: bytes | None  # the rewritten content; None: nothing to rewrite, send the file
    gzipped: bytes | None = None  # the content as served, gzipped, made the first time a client accepts it


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where it raises (a name longer than the file system allows: ENAMETOOLONG)."""
    try:
        return path.is_file()
    except OSError:
        return False


class ViewerFiles:
    """The OHIF build in ``dist``, served under :data:`BASE` (absolute paths rewritten, see the module)."""

    def __init__(self, dist: Path) -> None:
        self.dist = dist.resolve()
        self._kept: dict[Path, _Kept] = {}

    def installed(self) -> bool:
        return (self.dist / "index.html").is_file()

    def response(self, rel: str, gzip_ok: bool = False) -> Response:
        """The file at ``rel`` (below the dist), ``index.html`` for a client-side route, or 404;
        gzip-compressed when ``gzip_ok`` and the kind of file gains from it."""
        path = (self.dist / rel).resolve() if rel else self.dist / "index.html"
        if not path.is_relative_to(self.dist):
            return PlainTextResponse("not a file of the viewer\n", status_code=404)
        if not _is_file(path):
            if "." in rel.rsplit("/", 1)[-1]:
                return PlainTextResponse(f"the viewer has no file {rel!r}\n", status_code=404)
            path = self.dist / "index.html"  # one of OHIF's own routes
        headers = {"Cache-Control": _NO_CACHE if path.name == "index.html" else _KEEP}
        compressible = path.suffix in _GZIP_SUFFIXES
        if compressible:
            headers["Vary"] = "Accept-Encoding"
        kept = self._entry(path)
        if compressible and gzip_ok and kept.size >= _GZIP_MIN_BYTES:
            if kept.gzipped is None:
                kept.gzipped = gzip.compress(kept.body if kept.body is not None else path.read_bytes(), _GZIP_LEVEL,
                                             mtime=0)
            return Response(kept.gzipped, media_type=_media_type(path), headers={**headers, "Content-Encoding": "gzip"})
        if kept.body is None:
            return FileResponse(path, media_type=_media_type(path), headers=headers)
        return Response(kept.body, media_type=_media_type(path), headers=headers)

    def _entry(self, path: Path) -> _Kept:
        """What is kept of ``path``, made again when the file changed (its rewrite done then, its gzip on demand)."""
        st = path.stat()
        known = self._kept.get(path)
        if known is None or (known.mtime_ns, known.size) != (st.st_mtime_ns, st.st_size):
            body = None
            rules = _REWRITES.get(path.suffix)
            if rules is not None:
                original = data = path.read_bytes()
                for pattern, replacement in rules:
                    data = pattern.sub(replacement, data)
                body = data if data != original else None
            known = self._kept[path] = _Kept(st.st_mtime_ns, st.st_size, body)
        return known


def _media_type(path: Path) -> str:
    known = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".json": "application/json", ".jsonc": "application/json", ".wasm": "application/wasm"}
    return known.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def routes(ctx: WebContext) -> list[BaseRoute]:
    """``/viewer`` (a redirect), ``/viewer/app-config.js`` and the viewer's files; none when ``[web] viewer = false``."""
    settings = ctx.settings
    if not settings.web.viewer.enabled:
        return []
    files = ViewerFiles(ohif_dist(settings))
    if not files.installed():
        log.warning("the OHIF viewer is not installed in %s: /viewer/ answers 503 (`dicomflow stack up` installs "
                    "it; or set web.viewer.dist, or [web] viewer = false)", files.dist)
    config_js = app_config_js(settings)

    async def redirect(request: Request) -> Response:
        return RedirectResponse(BASE + (f"?{request.url.query}" if request.url.query else ""), status_code=308)

    async def config(request: Request) -> Response:
        return Response(config_js, media_type="text/javascript; charset=utf-8", headers={"Cache-Control": _NO_CACHE})

    async def page(request: Request) -> Response:
        if not files.installed():
            return PlainTextResponse(f"the OHIF viewer is not installed in {files.dist}: `dicomflow stack up` "
                                     "installs it\n", status_code=503)
        # a thread: the first answer of a bundle reads, rewrites and compresses up to 17 MB
        return await run_in_threadpool(files.response, str(request.path_params.get("path", "")), accepts_gzip(request))

    return [
        Route(BASE.rstrip("/"), redirect, methods=["GET"]),
        Route(BASE + "app-config.js", config, methods=["GET"]),
        Route(BASE, page, methods=["GET"]),
        Route(BASE + "{path:path}", page, methods=["GET"]),
    ]


__all__ = ["BASE", "ViewerFiles", "app_config", "app_config_js", "routes", "viewer_url"]
