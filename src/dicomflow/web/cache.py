"""The WADO-RS metadata cache: each instance's DICOM JSON, built from its header once.

Documents live as files under ``{storage.root}/.dicomweb/metadata/{tenant}/
{study}/{series}/{sop}.{trace_id}.json``: next to the data they describe
(shared by every web process and machine that mounts the storage), keyed by
the receipt's trace id, so an instance stored again (a new receipt) gets a
new document instead of a stale one. Files are written to a temporary name
and renamed, so a reader never sees half a document. The folder name starts
with a dot, which no tenant id can (ingest's tenant rule,
:func:`~dicomflow.ingest.uids.require_tenant`), and holds no ``.dcm`` files,
so nothing else under the root mistakes it for data.

Every path component is checked here before use: the UIDs by the one UID
rule (:func:`dicomflow.dicom.derived.is_valid_uid`, which the caller's
:func:`~dicomflow.web.context.check_uid` applied already), the tenant and
trace id by a file-name pattern; anything else simply is not cached.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from dicomflow.dicom.derived import is_valid_uid

log = logging.getLogger(__name__)

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FOLDER = ".dicomweb"


class MetadataCache:
    """Instance metadata documents on disk (bytes of DICOM JSON with relative BulkDataURIs)."""

    def __init__(self, root: Path) -> None:
        self.root = root / FOLDER / "metadata"

    def path(self, tenant: str, study: str, series: str, sop: str, trace_id: str) -> Path | None:
        if not (_SAFE.match(tenant) and _SAFE.match(trace_id) and all(is_valid_uid(u) for u in (study, series, sop))):
            return None
        return self.root / tenant / study / series / f"{sop}.{trace_id}.json"

    def get(self, path: Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def put(self, path: Path | None, document: bytes) -> None:
        """Store a document; a failure is logged (the answer is served regardless)."""
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(document)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("metadata cache write %s failed: %s", path, exc)


__all__ = ["FOLDER", "MetadataCache"]
