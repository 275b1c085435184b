"""The start-up side of the receiver journal: the store events of segments a dead process left.

A segment whose ``flock`` is free belongs to a receiver process that died
(:func:`~dicomflow.ingest.journal_segment.claim_orphan`). Its records are
decoded back into store events for :class:`~dicomflow.ingest.journal.Journal`
to publish again; a segment with no store event in it is removed at once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

from dicomflow.errors import WireFormatError
from dicomflow.ingest.journal_segment import Segment, claim_orphan, clear_temporaries, segment_paths
from dicomflow.models import DicomStoreMeta, decode

log = logging.getLogger(__name__)


def orphaned_events(folder: Path) -> Iterator[tuple[Segment, list[DicomStoreMeta]]]:
    """Each orphaned segment of ``folder`` (now locked by this process) with its store events, oldest first.

    A segment that cannot be read, or a record that is not a store event, is
    logged as an error and left out; half-made segments are cleared first.
    """
    clear_temporaries(folder)
    for path in segment_paths(folder):
        try:
            claimed = claim_orphan(path)
        except OSError as exc:
            log.error("journal: cannot read %s: %s", path, exc.strerror or exc)
            continue
        if claimed is None:
            continue
        segment, payloads = claimed
        events: list[DicomStoreMeta] = []
        for payload in payloads:
            try:
                events.append(decode(payload, DicomStoreMeta))
            except WireFormatError as exc:
                log.error("journal: a record of %s is not a store event (%s); skipped", path.name, exc)
        if events:
            yield segment, events
        else:
            segment.remove()


__all__ = ["orphaned_events"]
