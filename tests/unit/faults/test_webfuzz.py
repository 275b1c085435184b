"""The web fuzz phase's pure parts: same seed same requests, every route swept, the STOW verdict's arithmetic."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

from dicomflow_faults.instances import build_template, make_uid
from dicomflow_faults.webfuzz.bodies import FAMILIES as BODY_FAMILIES
from dicomflow_faults.webfuzz.bodies import BodyMaker, lie_about_length
from dicomflow_faults.webfuzz.requests import FAMILIES, METHODS, Known, RequestMaker, RouteInfo, routes_of
from dicomflow_faults.webfuzz.tokens import KINDS, make_kit
from dicomflow_faults.webfuzz.verdict import WebFuzzResult, stow_outcome

RUN = 12345678


@pytest.fixture(scope="module")
def maker(tmp_path_factory: pytest.TempPathFactory) -> RequestMaker:
    kit = make_kit(tmp_path_factory.mktemp("keys"), "default")
    bodies = BodyMaker(build_template("CT"), RUN, make_uid(RUN, 1, 1), 64 * 1024)
    known = [Known(make_uid(RUN, 1, 1), make_uid(RUN, 2, 0), make_uid(RUN, 3, 0))]
    routes = [RouteInfo("/studies", ("GET", "HEAD", "POST")),
              RouteInfo("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", ("GET", "HEAD"))]
    return RequestMaker(routes, known, kit, bodies, "127.0.0.1:8080")


def _without_tokens(data: bytes) -> bytes:
    return re.sub(rb"Authorization: [^\r]*\r\n", b"", data)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_seed_builds_the_same_request(maker: RequestMaker, family: str) -> None:
    for seed in range(20):
        first, again = maker.build(family, seed), maker.build(family, seed)
        assert _without_tokens(first.data) == _without_tokens(again.data)
        assert first.chunks == again.chunks


def test_the_sweep_covers_every_route_with_every_method(maker: RequestMaker) -> None:
    sweep = maker.sweep()
    assert {(r.path, m) for r, m in sweep} == {(r.path, m) for r in maker.routes for m in METHODS}
    request = maker.build("sweep", 1, sweep[-1])
    assert request.data.startswith(f"{sweep[-1][1]} /studies/".encode())


def test_the_route_list_is_the_apps_own() -> None:
    import dataclasses

    from dicomflow.settings import Settings
    from dicomflow.web.app import create_app

    settings = Settings()
    settings = dataclasses.replace(settings, web=dataclasses.replace(settings.web, auth="none"))
    found = routes_of(create_app(settings, publish_audit=False))
    routes = {r.path for r in found}
    assert {m for r in found if r.path == "/studies" for m in r.methods} >= {"GET", "POST"}  # QIDO and STOW
    assert "/studies/{study}/series/{series}/instances/{instance}/frames/{frames}" in routes
    assert "/healthz" in routes and len(routes) >= 25


def test_every_body_family_and_token_kind_can_be_built(maker: RequestMaker) -> None:
    rng = random.Random(3)
    for family in BODY_FAMILIES:
        body = maker.bodies.body(family, rng)
        assert body.content_type is not None and (body.data or family == "empty")
        if family.startswith("oversize"):
            assert len(body.data) > maker.bodies.max_stow_bytes
    for kind in KINDS:
        value = maker.kit.authorization(kind, rng)
        assert (value is None) == (kind == "missing")


def test_a_lying_part10_file_differs_from_the_good_one() -> None:
    _, good = BodyMaker(build_template("CT"), RUN, make_uid(RUN, 1, 1), 1024).instance(random.Random(1), 5)
    for seed in range(30):
        assert lie_about_length(good, random.Random(seed)) != good


def test_stow_outcome_counts_success_only_from_the_referenced_sop_sequence() -> None:
    doc = {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.1"]}}]},
           "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.2"]}}]}}
    body = json.dumps(doc).encode()
    assert stow_outcome(202, body, ["1.2.1", "1.2.2", "1.2.3"]) == ({"1.2.1"}, {"1.2.2", "1.2.3"})
    assert stow_outcome(400, body, ["1.2.1"]) == (set(), {"1.2.1"})  # a refused request stored nothing
    assert stow_outcome(None, b"", ["1.2.1"]) == (set(), {"1.2.1"})  # no answer: not a Success
    assert stow_outcome(200, b"not json", ["1.2.1"]) == (set(), {"1.2.1"})


def test_the_verdict_fails_on_a_5xx_a_dropped_connection_or_an_unindexed_success(tmp_path: Path) -> None:
    result = WebFuzzResult(requested=3, drained=True)
    result.record("qido", "GET /studies", 200, "answered")
    result.record("raw", "raw", None, "closed")  # an incomplete request may go unanswered
    result.record("route", "GET /x", 404, "answered")
    assert all(c.ok for c in result.checks)
    result.record("qido", "GET /studies", 500, "answered")
    result.record("route", "GET /y", None, "dropped")
    result.success_not_indexed = {"1.2.3"}
    failed = {c.name for c in result.checks if not c.ok}
    assert failed == {"web fuzz: no 5xx answer", "web fuzz: no dropped connection",
                      "web fuzz: every STOW part answered Success is indexed"}
