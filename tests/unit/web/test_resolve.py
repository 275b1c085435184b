"""Stored files are served only from inside the storage root, whatever links lie on the way."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from dicomflow.metrics.web import WebMetrics
from dicomflow.settings import load_settings
from dicomflow.web.auth import Authenticator
from dicomflow.web.blobio import Blob
from dicomflow.web.context import WebContext


def _context(root: Path) -> WebContext:
    base = load_settings(None, {})
    settings = dataclasses.replace(base, storage=dataclasses.replace(base.storage, root=root),
                                   web=dataclasses.replace(base.web, auth="none"))
    return WebContext(settings=settings, auth=Authenticator(settings), metrics=WebMetrics(CollectorRegistry()),
                      db=None)  # type: ignore[arg-type]


def test_files_inside_the_root_resolve_and_links_out_of_it_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    (root / "t" / "s").mkdir(parents=True)
    (root / "t" / "s" / "a.dcm").write_bytes(b"inside")
    (tmp_path / "secret.dcm").write_bytes(b"outside")
    os.symlink(tmp_path / "secret.dcm", root / "t" / "s" / "link.dcm")
    os.symlink(tmp_path, root / "t" / "up")
    os.symlink(root / "t" / "s" / "a.dcm", root / "t" / "inner.dcm")
    os.mkfifo(root / "t" / "s" / "fifo.dcm")
    ctx = _context(root)
    assert ctx.locate("t/s/a.dcm") == Blob("t/s/a.dcm", root / "t" / "s" / "a.dcm")
    assert ctx.locate(str(root / "t" / "s" / "a.dcm")) == Blob("t/s/a.dcm", root / "t" / "s" / "a.dcm")
    assert ctx.locate("t/inner.dcm").path == root / "t" / "s" / "a.dcm"  # a link within the root is fine
    for outside in ("t/s/link.dcm", "t/up/secret.dcm", "../secret.dcm", str(tmp_path / "secret.dcm")):
        with pytest.raises(HTTPException) as refused:
            ctx.locate(outside)
        assert refused.value.status_code == 500, outside
    for missing in ("t/s/gone.dcm", "t/s/fifo.dcm", "t/s"):
        with pytest.raises(HTTPException) as gone:
            ctx.locate(missing)
        assert gone.value.status_code == 404, missing
