"""DICOMweb when the file behind an index row is missing or unreadable, or the storage root is gone.

A missing file is 404 with a reason (series metadata, the instance, its
frames); a file that is no DICOM any more is 500 with a reason, logged
without a traceback; the storage root gone (an unmounted volume) is 503 with
``Retry-After`` and ``/healthz`` names the storage, until the root is back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import httpx
import pytest

from dicomflow.settings import Settings, ViewerSettings
from dicomflow.stack import free_port
from tests.integration.consumer_support import corpus, pipeline, publish, run_service
from tests.integration.web_support import running_web

__all__ = ["pipeline"]


def _path(settings: Settings, file_path: str) -> Path:
    return Path(file_path) if os.path.isabs(file_path) else Path(settings.storage.root) / file_path


def test_missing_unreadable_and_unmounted_files(pipeline: Settings, caplog: pytest.LogCaptureFixture) -> None:
    c = corpus(pipeline, 12, studies=1, series_per_study=3)
    publish(pipeline, c.events)
    run_service(pipeline, until_idle_s=3.0)
    web = dataclasses.replace(pipeline.web, host="127.0.0.1", port=free_port(), auth="none",
                              viewer=ViewerSettings(enabled=False))
    settings = dataclasses.replace(pipeline, web=web)
    by_series: dict[str, list[tuple[str, str]]] = {}
    for e in c.events:
        by_series.setdefault(e.series_uid, []).append((e.sop_uid, e.file_path))
    (gone_series, gone), (bad_series, bad), (third_series, third) = list(by_series.items())[:3]
    study = c.events[0].study_uid
    caplog.set_level(logging.INFO)

    def instance(series: str, sop: str) -> str:
        return f"/studies/{study}/series/{series}/instances/{sop}"

    with running_web(settings) as base, httpx.Client(base_url=base, timeout=30) as client:
        _path(settings, gone[0][1]).unlink()
        r = client.get(f"/studies/{study}/series/{gone_series}/metadata")
        assert r.status_code == 404 and "missing" in r.text, r.text
        assert client.get(instance(gone_series, gone[0][0])).status_code == 404
        r = client.get(instance(gone_series, gone[0][0]) + "/frames/1")
        assert r.status_code == 404 and "missing" in r.text, r.text
        assert client.get(instance(gone_series, gone[1][0])).status_code == 200

        _path(settings, bad[0][1]).write_bytes(b"not DICOM at all" * 64)
        r = client.get(f"/studies/{study}/series/{bad_series}/metadata")
        assert r.status_code == 500 and "not readable DICOM" in r.text, r.text
        r = client.get(instance(bad_series, bad[0][0]) + "/frames/1")
        assert r.status_code == 500 and "not readable DICOM" in r.text, r.text

        root = Path(settings.storage.root)
        away = root.with_name(root.name + ".unmounted")
        root.rename(away)
        try:
            for path in (f"/studies/{study}/series/{third_series}/metadata", instance(third_series, third[0][0]),
                         instance(third_series, third[0][0]) + "/frames/1"):
                r = client.get(path)
                assert r.status_code == 503 and r.headers.get("retry-after"), (path, r.status_code, r.text)
                assert "storage" in r.text, r.text
            health = client.get("/healthz")
            assert health.status_code == 503
            assert health.json()["checks"]["storage"].startswith("not writable"), health.json()
            assert health.json()["checks"]["postgresql"] == "ok"
        finally:
            away.rename(root)
        assert client.get(f"/studies/{study}/series/{third_series}/metadata").status_code == 200
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
