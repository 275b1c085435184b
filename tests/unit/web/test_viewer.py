"""/viewer/ over the app itself, on a small stand-in of OHIF's root-based build; the viewer's settings.

The real build is opened by a real browser in tests/integration/web/test_viewer.py; here the
rewriting, the routing and the generated configuration, path by path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from dicomflow.errors import ConfigError
from dicomflow.settings import Settings, load_settings, ohif_dist
from dicomflow.web import viewer
from dicomflow.web.app import create_app

INDEX = ('<html><head><script>window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json">'
         '<script src="/app-config.js"></script><script defer src="/app.bundle.1.js"></script>'
         '<a href="//cdn.example/x">x</a></head></html>')


def _dist(tmp_path: Path) -> Path:
    dist = tmp_path / "ohif" / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "app.bundle.1.js").write_text('(() => {\n__webpack_require__.p = "/";\n})();\n')
    (dist / "chunk.2.js").write_text("console.log('nothing absolute');\n")
    (dist / "app.bundle.css").write_text("@font-face{src:url(/a.woff2)}")
    (dist / "manifest.json").write_text(json.dumps({"icons": [{"src": "/assets/i.png"}], "start_url": "/"}))
    (dist / "assets" / "i.png").write_bytes(b"\x89PNG")
    (dist / "app-config.js").write_text("window.config = {name: 'the build\\'s own'};")
    (tmp_path / "secret.txt").write_text("outside the dist")
    return dist


def _get(settings: Settings, *paths: str, headers: dict[str, str] | None = None) -> list[httpx.Response]:
    app = create_app(settings, route_factories=(viewer.routes,), registry=CollectorRegistry(), publish_audit=False)

    async def get() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://web") as client:
            return [await client.get(p, headers=headers) for p in paths]

    return asyncio.run(get())


def _settings(tmp_path: Path, **viewer_changes: object) -> Settings:
    base = load_settings(None, {}, {"web.auth": "none", "stack.dir": str(tmp_path / "stack")})
    changed = dataclasses.replace(base.web.viewer, **viewer_changes)  # type: ignore[arg-type]
    return dataclasses.replace(base, web=dataclasses.replace(base.web, viewer=changed))


def test_the_root_based_build_is_served_under_viewer(tmp_path: Path) -> None:
    settings = _settings(tmp_path, dist=_dist(tmp_path))
    index, bundle, chunk, css, manifest, icon = _get(settings, "/viewer/", "/viewer/app.bundle.1.js",
                                                    "/viewer/chunk.2.js", "/viewer/app.bundle.css",
                                                    "/viewer/manifest.json", "/viewer/assets/i.png")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert 'window.PUBLIC_URL="/viewer/"' in index.text and 'src="/viewer/app.bundle.1.js"' in index.text
    assert 'href="/viewer/manifest.json"' in index.text and 'href="//cdn.example/x"' in index.text
    assert index.headers["cache-control"] == "no-cache"
    assert '__webpack_require__.p = "/viewer/";' in bundle.text
    assert chunk.text == "console.log('nothing absolute');\n" and "etag" in chunk.headers  # sent as it is
    assert css.text == "@font-face{src:url(/viewer/a.woff2)}"
    assert json.loads(manifest.text) == {"icons": [{"src": "/viewer/assets/i.png"}], "start_url": "/viewer/"}
    assert icon.status_code == 200 and icon.content == b"\x89PNG"


def test_scripts_and_wasm_go_out_gzipped_to_a_client_that_accepts_it(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    padding = "".join(f"var v{i} = {i};\n" for i in range(400))
    (dist / "app.bundle.1.js").write_text(f'(() => {{\n__webpack_require__.p = "/";\n{padding}}})();\n')
    (dist / "big.chunk.js").write_text(padding)
    (dist / "codec.wasm").write_bytes(b"\0asm" + bytes(4096))
    (dist / "assets" / "big.png").write_bytes(b"\x89PNG" + bytes(4096))
    settings = _settings(tmp_path, dist=dist)
    paths = ("/viewer/app.bundle.1.js", "/viewer/big.chunk.js", "/viewer/codec.wasm", "/viewer/assets/big.png",
             "/viewer/chunk.2.js")
    bundle, chunk, wasm, png, small = _get(settings, *paths, headers={"Accept-Encoding": "gzip, br"})
    assert bundle.headers["content-encoding"] == "gzip" and bundle.headers["vary"] == "Accept-Encoding"
    assert '__webpack_require__.p = "/viewer/";' in bundle.text and bundle.text.endswith("})();\n")  # rewritten, then packed
    assert chunk.headers["content-encoding"] == "gzip" and chunk.text == padding
    assert int(chunk.headers["content-length"]) < len(padding) // 3
    assert wasm.headers["content-encoding"] == "gzip" and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content == b"\0asm" + bytes(4096)
    assert "content-encoding" not in png.headers and png.content == b"\x89PNG" + bytes(4096)  # compressed already
    assert "content-encoding" not in small.headers  # under a kilobyte: not worth it
    plain = _get(settings, *paths[:3], headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert all("content-encoding" not in r.headers for r in plain)
    assert plain[1].text == padding and plain[2].headers["content-type"] == "application/wasm"


def test_client_side_routes_get_the_index_and_missing_files_404(tmp_path: Path) -> None:
    settings = _settings(tmp_path, dist=_dist(tmp_path))
    study, callback, missing, outside, bare = _get(
        settings, "/viewer/viewer?StudyInstanceUIDs=1.2.3", "/viewer/callback", "/viewer/nothing.js",
        "/viewer/../secret.txt", "/viewer")
    assert study.status_code == callback.status_code == 200 and 'window.PUBLIC_URL="/viewer/"' in study.text
    assert missing.status_code == 404 and "nothing.js" in missing.text
    assert outside.status_code == 404 and "outside the dist" not in outside.text
    assert bare.status_code == 308 and bare.headers["location"] == "/viewer/"


def test_app_config_is_generated_for_this_server(tmp_path: Path) -> None:
    (answer,) = _get(_settings(tmp_path, dist=_dist(tmp_path)), "/viewer/app-config.js")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/javascript")
    assert "the build's own" not in answer.text and "window.location.origin" in answer.text
    config = viewer.app_config(_settings(tmp_path))
    assert config["routerBasename"] == "/viewer/" and "oidc" not in config
    (source,) = config["dataSources"]  # type: ignore[misc]
    flags = source["configuration"]
    assert (flags["qidoSupportsIncludeField"], flags["supportsWildcard"], flags["supportsFuzzyMatching"]) == (
        True, True, True)
    assert flags["thumbnailRendering"] == "wadors" and config["defaultDataSourceName"] == source["sourceName"]


def test_with_oauth2_the_config_carries_the_oidc_login(tmp_path: Path) -> None:
    base = _settings(tmp_path, oidc_authority="https://idp.example/realms/x", client_id="ohif", scope="openid dw")
    assert "oidc" not in viewer.app_config(base)  # web.auth = "none": nobody logs in
    settings = dataclasses.replace(base, web=dataclasses.replace(base.web, auth="oauth2"))
    (oidc,) = viewer.app_config(settings)["oidc"]  # type: ignore[misc]
    assert (oidc["authority"], oidc["client_id"], oidc["scope"], oidc["response_type"]) == (
        "https://idp.example/realms/x", "ohif", "openid dw", "code")
    assert "oidc" in viewer.app_config_js(settings)


def test_not_installed_is_503_with_the_way_out_and_off_is_404(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert ohif_dist(settings) == tmp_path / "stack" / "cache" / f"ohif-{settings.stack.ohif_version}" / "dist"
    (missing,) = _get(settings, "/viewer/")
    assert missing.status_code == 503 and "dicomflow stack up" in missing.text
    (off,) = _get(_settings(tmp_path, enabled=False, dist=_dist(tmp_path)), "/viewer/")
    assert off.status_code == 404


def test_viewer_url_names_the_study_on_this_server() -> None:
    settings = load_settings(None, {}, {"web.host": "0.0.0.0", "web.port": 8099})
    assert viewer.viewer_url(settings, "1.2.3") == "http://127.0.0.1:8099/viewer/viewer?StudyInstanceUIDs=1.2.3"


def test_viewer_switch_and_table_from_each_source(tmp_path: Path) -> None:
    assert load_settings(None, {}).web.viewer.enabled and load_settings(None, {}).web.cors_origins == ()
    toml = tmp_path / "dicomflow.toml"
    toml.write_text('[web]\nviewer = false\ncors_origins = ["https://viewer.example"]\n')
    s = load_settings(toml, {})
    assert not s.web.viewer.enabled and s.web.cors_origins == ("https://viewer.example",)
    toml.write_text('[web.viewer]\nenabled = false\noidc_authority = "https://idp.example"\nclient_id = "ohif"\n')
    s = load_settings(toml, {"DICOMFLOW_WEB_VIEWER": "true", "DICOMFLOW_WEB_VIEWER_SCOPE": "openid x"})
    assert s.web.viewer.enabled and (s.web.viewer.oidc_authority, s.web.viewer.client_id, s.web.viewer.scope) == (
        "https://idp.example", "ohif", "openid x")
    s = load_settings(None, {"DICOMFLOW_WEB_CORS_ORIGINS": "https://a.example,http://127.0.0.1:3000"})
    assert s.web.cors_origins == ("https://a.example", "http://127.0.0.1:3000")


@pytest.mark.parametrize("origin", ["*", "https://viewer.example/", "viewer.example", "https://*.example", "ftp://x"])
def test_a_cors_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match=r"web\.cors_origins"):
        load_settings(None, {}, {"web.cors_origins": [origin]})
