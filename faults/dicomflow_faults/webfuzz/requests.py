"""Mutated HTTP requests over every route of ``dicomflow web``, built from a seed.

The routes come from the app itself (:func:`routes_of`), so a route added
later is fuzzed without a change here. A request is ``(family, seed)``:
the same pair builds the same bytes (the tokens' signatures aside, see
:mod:`.tokens`). Families:

- ``sweep``: every route with every method of :data:`METHODS`, once, good token;
- ``route``: any route, a method it has (sometimes another), path parameters
  that are known UIDs or hostile ones, random query and headers;
- ``qido``: a search route with hostile query keys and values (control
  characters, ``%00``, long, other scripts' digits, huge limits);
- ``headers``: hostile ``Host``, ``Accept``, ``Range`` and odd headers;
- ``auth``: any route with a token of each refused kind;
- ``raw``: request lines and headers no client library would send;
- ``stow-<body family>``: STOW-RS bodies of :mod:`.bodies`.
"""

from __future__ import annotations

import random
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field

from dicomflow_faults.webfuzz.bodies import FAMILIES as BODY_FAMILIES
from dicomflow_faults.webfuzz.bodies import Body, BodyMaker
from dicomflow_faults.webfuzz.tokens import KINDS, TokenKit

METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE")
FAMILIES = ("route", "qido", "headers", "auth", "raw", *(f"stow-{f}" for f in BODY_FAMILIES))

_QIDO_KEYS = ("PatientID", "PatientName", "AccessionNumber", "StudyDate", "StudyInstanceUID", "SeriesInstanceUID",
              "SOPInstanceUID", "Modality", "ModalitiesInStudy", "00100020", "0020000D", "limit", "offset",
              "includefield", "fuzzymatching", "NotAKeyword", "7FE00010", "", "accept", "window", "quality",
              "viewport", "token")
_HOSTILE = ("Smi%00h*", "%00", "a%0Ab", "%0D%0ASet-Cookie:%20x=1", "%1B[31m", "%7F", "%C2%85", "%09", "x%00",
            "%FF%FE", "%", "%ZZ", "%E4%B8%AD%E6%96%87", "M%C3%BCller*", "*", "?", "**??", "\\", "%5C%5C",
            "1.2.3", "1.2.3,4.5.6", "1..2", "01.2", "100000000", "99999999999999999999999", "-1", "0", "1e3",
            "%D9%A1%D9%A0", "1_000", "+5", "20240101-", "-20240101", "2024-99-99", "20240101-20230101-", "--",
            "all", "true", "maybe", "00100010,all", "image/png", "0,100", "1,2,3,4")


@dataclass(frozen=True)
class RouteInfo:
    """One route of the app: its path template and methods."""

    path: str
    methods: tuple[str, ...]


def routes_of(app: object) -> list[RouteInfo]:
    """Every ``Route`` of a Starlette app, with its methods (HEAD included where GET is)."""
    from starlette.routing import Route

    out = []
    for route in getattr(app, "routes", ()):
        if isinstance(route, Route):
            out.append(RouteInfo(route.path, tuple(sorted(route.methods or ("GET",)))))
    return out


@dataclass
class Request:
    """One request to send, and what the verdict needs to know about it."""

    family: str
    data: bytes
    route: str = ""
    method: str = ""
    body: Body | None = None
    #: Bytes of the body sent as chunked transfer coding, in pieces.
    chunks: list[bytes] = field(default_factory=list)
    #: False for bytes that are not a whole request: the server may close without an answer.
    complete: bool = True


@dataclass(frozen=True)
class Known:
    """UIDs of instances the phase stored before the fuzz (so WADO routes find something)."""

    study: str
    series: str
    sop: str


class RequestMaker:
    """Builds the request of ``(family, seed)``."""

    def __init__(self, routes: Sequence[RouteInfo], known: Sequence[Known], kit: TokenKit, bodies: BodyMaker,
                 host: str) -> None:
        self.routes = list(routes)
        self.known = list(known)
        self.kit = kit
        self.bodies = bodies
        self.host = host

    def sweep(self) -> list[tuple[RouteInfo, str]]:
        return [(r, m) for r in self.routes for m in METHODS]

    def build(self, family: str, seed: int, sweep: tuple[RouteInfo, str] | None = None) -> Request:
        rng = random.Random(seed)
        if sweep is not None:
            route, method = sweep
            return self._request("sweep", method, self._path(route.path, rng, hostile=0.0), rng, route.path,
                                 token="good", query="")
        if family.startswith("stow-"):
            return self._stow(family, rng)
        if family == "raw":
            data, complete = _raw(rng, self.host, self.kit)
            return Request(family, data, "raw", "", complete=complete)
        route = rng.choice([r for r in self.routes if family != "qido" or _is_search(r)] or self.routes)
        method = rng.choice(route.methods) if rng.random() < 0.85 else rng.choice(METHODS)
        path = self._path(route.path, rng, hostile=0.3 if family == "route" else 0.05)
        token = rng.choice(KINDS[1:]) if family == "auth" else ("good" if rng.random() < 0.9 else rng.choice(KINDS))
        query = self._query(rng, many=family == "qido") if family in ("route", "qido") or rng.random() < 0.3 else ""
        return self._request(family, method, path, rng, route.path, token=token, query=query,
                             hostile_headers=family == "headers")

    # ------------------------------------------------------------------ parts of a request

    def _path(self, template: str, rng: random.Random, hostile: float) -> str:
        known = rng.choice(self.known)
        out = template
        for name, good in (("study", known.study), ("series", known.series), ("instance", known.sop)):
            out = out.replace("{" + name + "}", _uid_segment(good, rng) if rng.random() < hostile else good)
        fills = {"{frames}": ["1", "1,1", "0", "-1", "2", "1,,2", "a", "%D9%A1", "99999999999999999999", "1%002"],
                 "{frame}": ["1", "0", "-3", "x", "%00", "4294967296"],
                 "{tags:path}": ["7FE00010", "00100010", "00081140/0/00081155", "zz", "%00", "7FE00010/1/2/3/4", ""],
                 "{path:path}": ["index.html", "../../../etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "a%00b", "app-config.js",
                                 "x" * 300, "%C0%AE%C0%AE/", "assets/"]}
        for placeholder, choices in fills.items():
            if placeholder in out:
                out = out.replace(placeholder, rng.choice(choices) if rng.random() < max(hostile, 0.5) else choices[0])
        return out

    def _query(self, rng: random.Random, many: bool) -> str:
        pairs = []
        for _ in range(rng.randint(1 if many else 0, 5 if many else 2)):
            key = rng.choice(_QIDO_KEYS)
            if rng.random() < 0.1:
                key = rng.choice(["%00", "Patient%00ID", "%0A", "a%20b", "%E4%B8%AD"])
            value = rng.choice(_HOSTILE) if rng.random() < 0.8 else "x" * rng.choice([100, 5000, 20000])
            pairs.append(f"{key}={value}" if rng.random() < 0.95 else key)
        return "&".join(pairs)

    def _headers(self, rng: random.Random, token: str, hostile: bool) -> list[tuple[str, str]]:
        headers = [("Host", self.host if not hostile or rng.random() < 0.4 else rng.choice(
            ["[", "a b", "evil.invalid/../x", "\u00e9vil", "h:99999999", "", "[::1", "x" * 500, "a@b:1"]))]
        auth = self.kit.authorization(token, rng)
        if auth is not None:
            headers.append(("Authorization", auth))
        accepts = ["*/*", 'multipart/related; type="application/dicom"; transfer-syntax=*', "application/dicom+json",
                   'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
                   'multipart/related; type="application/octet-stream"', "image/png", "image/jpeg; q=0.5",
                   "application/json", "text/html"]
        if hostile:
            accepts += ["image/jpeg; q=abc", 'multipart/related; type=', "%%%%", ";;;;", "*/*; q=-1",
                        'multipart/related; type="application/dicom"; transfer-syntax=\u00e9', "a" * 8000,
                        'multipart/related; transfer-syntax="1.2.840.10008.1.2.1', "image/*; q=1e9"]
        if rng.random() < 0.8:
            headers.append(("Accept", rng.choice(accepts)))
        if hostile:
            extra = [("Range", rng.choice(["bytes=0-10", "bytes=-5", "bytes=9-1", "bytes=abc", "items=0-1"])),
                     ("If-None-Match", rng.choice(['"x"', "*", "\u00e9"])), ("Origin", "http://evil.invalid"),
                     ("Content-Type", rng.choice(["application/dicom", "x/y; boundary=\u00e9", ""])),
                     ("X-Forwarded-Host", "evil.invalid\u00e9"), ("Cookie", "a=" + "b" * 4000)]
            headers.extend(rng.sample(extra, rng.randint(1, len(extra))))
        return headers

    def _request(self, family: str, method: str, path: str, rng: random.Random, route: str, *, token: str,
                 query: str, hostile_headers: bool = False) -> Request:
        target = path + (f"?{query}" if query else "")
        headers = self._headers(rng, token, hostile_headers)
        return Request(family, serialize(method, target, headers, b""), route, method)

    def _stow(self, family: str, rng: random.Random) -> Request:
        body = self.bodies.body(family.removeprefix("stow-"), rng)
        known = rng.choice(self.known)
        path = "/studies" if rng.random() < 0.6 else f"/studies/{rng.choice([known.study, self.bodies.study_uid])}"
        headers = [("Host", self.host), ("Authorization", self.kit.authorization(
            "good" if rng.random() < 0.92 else rng.choice(KINDS[1:-1]), rng) or ""),
            ("Content-Type", body.content_type), ("Accept", "application/dicom+json")]
        if body.chunked:
            pieces = [body.data[i:i + 65536] for i in range(0, len(body.data), 65536)]
            headers.append(("Transfer-Encoding", "chunked"))
            return Request(family, serialize("POST", path, headers, None), path, "POST", body, pieces)
        length = body.declared_length if body.declared_length is not None else len(body.data)
        headers.append(("Content-Length", str(length)))
        return Request(family, serialize("POST", path, headers, body.data), path, "POST", body)


def _is_search(route: RouteInfo) -> bool:
    return route.path.endswith(("/studies", "/series", "/instances")) and "GET" in route.methods


def _uid_segment(good: str, rng: random.Random) -> str:
    return rng.choice([good + "%00", good + ".", "1..2", "0" + good, "a.b.c", "x" * 200, "9" * 70, "%2F..%2F..",
                       "..", ".", "%E4%B8%AD", good.replace(".", "%2E"), "1.2%0A3", good + "%20", "%C0%AE",
                       "1." + "2" * 64])


def serialize(method: str, target: str, headers: list[tuple[str, str]], body: bytes | None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers] + ["Connection: close"]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return head + (body or b"")


def _raw(rng: random.Random, host: str, kit: TokenKit) -> tuple[bytes, bool]:
    """Request bytes a client library would refuse to send, and whether they are a whole request."""
    auth = f"Authorization: Bearer {kit.good()}\r\n"
    target = rng.choice(["/studies?PatientID=a\x00b", "/studies/\x01", "/studies?x=\xff\xfe", "/\u4e2d",
                         "/studies?" + "a=b&" * 4000, "*", "http://evil.invalid/studies", "//studies", "/studies#frag",
                         "/studies?PatientID=" + urllib.parse.quote("\x00", safe=""), "/%", "/studies/%zz/series"])
    choice = rng.randrange(6)
    if choice == 0:
        return f"GET {target} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n".encode(), True
    if choice == 1:  # a header with a NUL, a bare LF, an obs-fold
        bad = rng.choice(["X-A: a\x00b\r\n", "X-B: a\nb\r\n", "X-C: a\r\n b\r\n", "Bad Header: x\r\n", ": x\r\n"])
        return f"GET /studies HTTP/1.1\r\nHost: {host}\r\n{auth}{bad}Connection: close\r\n\r\n".encode(), True
    if choice == 2:
        return rng.choice([b"GET\r\n\r\n", b"\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"G\xffT / HTTP/1.1\r\n\r\n",
                           b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + b"X: " + b"y" * 70000 + b"\r\n\r\n"]), False
    if choice == 3:  # two Content-Lengths, or one that does not parse
        cl = rng.choice(["Content-Length: 5\r\nContent-Length: 6\r\n", "Content-Length: -1\r\n", "Content-Length: x\r\n",
                         "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"])
        return f"POST /studies HTTP/1.1\r\nHost: {host}\r\n{auth}{cl}Connection: close\r\n\r\nabcdef".encode(), True
    if choice == 4:  # HTTP/1.0, no Host
        return f"GET {rng.choice(['/studies', '/healthz', '/studies?limit=%00'])} HTTP/1.0\r\n{auth}\r\n".encode(), True
    return rng.randbytes(rng.randint(1, 300)), False


__all__ = ["FAMILIES", "METHODS", "Known", "Request", "RequestMaker", "RouteInfo", "routes_of", "serialize"]
