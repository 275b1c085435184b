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

A whole study's or series' answer is cached too, as ``_{level}.{digest}.json``
in its folder (no UID starts with ``_``), the digest over its instances'
``sop.trace_id`` in answer order: a warm 500-instance series is then one
file read instead of 500 (per-instance validation and reads cost ~0.2 ms
each on the loaded 2-core machine, over the 50 ms target), and any new,
replaced or removed instance changes the digest. Writing one removes the
level's older answers in that folder.

On the ``s3`` backend ``storage.root`` is a local folder: the cache stays
local to each web machine (rebuilt from the objects' headers where it is
missing).

In front of the files, each server process keeps whole answers in memory as
sent (:class:`MetadataAnswer`: the encoded array with absolute BulkDataURIs,
and its gzip when a client asked for one), in
:attr:`~dicomflow.web.context.WebContext.answers`, bounded by
``web.metadata_cache_bytes``. Such an answer is served while the study's or
series' change marker (:func:`dicomflow.store.freshness.change_marker`: its
instance rows and receipts counted and checksummed, one query) equals the one read before
the answer was built: a warm request neither looks up the instances nor
reads or rewrites 5 MB.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dicomflow.dicom.derived import is_valid_uid
from dicomflow.store.freshness import Marker
from dicomflow.store.queries import StoredInstance

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

    def answer_path(self, tenant: str, study: str, series: str | None, members: Iterable[tuple[str, str]]) -> Path | None:
        """Where a study's (``series`` None) or series' whole answer lives; ``members`` are (sop, trace id)."""
        if not (_SAFE.match(tenant) and is_valid_uid(study) and (series is None or is_valid_uid(series))):
            return None
        digest = hashlib.sha256("\n".join(f"{sop}.{trace}" for sop, trace in members).encode()).hexdigest()[:32]
        folder = self.root / tenant / study
        if series is not None:
            return folder / series / f"_series.{digest}.json"
        return folder / f"_study.{digest}.json"

    def put_answer(self, path: Path | None, document: bytes) -> None:
        """Store a whole answer and remove the level's older ones in its folder (best effort)."""
        if path is None:
            return
        level = path.name.split(".", 1)[0]
        try:
            for old in path.parent.glob(f"{level}.*.json"):
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("metadata cache cleanup in %s failed: %s", path.parent, exc)
        self.put(path, document)

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


#: Bytes an answer is charged per instance beyond its bodies (its index rows, kept for the audit).
_PER_INSTANCE = 512


@dataclass
class MetadataAnswer:
    """A whole study's or series' metadata answer as sent, valid while the index's marker is ``marker``."""

    marker: Marker
    items: list[StoredInstance]
    body: bytes
    #: ``body`` gzipped, made the first time a client accepting gzip asks.
    gzipped: bytes | None = None

    @property
    def size(self) -> int:
        return len(self.body) + len(self.gzipped or b"") + _PER_INSTANCE * len(self.items)


__all__ = ["FOLDER", "MetadataAnswer", "MetadataCache"]
