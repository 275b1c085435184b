"""The validity rule end to end: what ``dicomflow publish`` accepts, the consumer indexes; nothing reaches the DLQ.

pydicom's bundled data folder holds good files next to broken ones
(truncated pixel data, data sets without UIDs, DICOMDIRs, non-DICOM). The
command is run as a user runs it, with ``--copy-into-storage``, over the whole
folder; then the consumer runs until idle on the real broker and PostgreSQL.
Every published store event must be indexed, none dead-lettered, and the
command's summary must list each skipped file with its reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dicomflow.models import DicomStoreMeta, decode
from dicomflow.settings import Settings, to_child_env
from tests.conftest import PYDICOM_DATA
from tests.integration.consumer_support import counts, pipeline, run_service, topic

__all__ = ["pipeline"]  # the fixture, re-exported for pytest


def test_publishing_the_whole_sample_folder_dead_letters_nothing(pipeline: Settings, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "from dicomflow.cli import main; main()", "publish", str(PYDICOM_DATA),
         "--copy-into-storage"],
        env={**to_child_env(pipeline, os.environ), "COLUMNS": "400"}, cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    events = [decode(r.value, DicomStoreMeta) for r in topic(pipeline, pipeline.topics.main)]
    assert len(events) > 100

    summary = run_service(pipeline)

    assert summary.dead_lettered == 0
    assert topic(pipeline, f"{pipeline.topics.main}.dlq") == []
    assert summary.instances == len(events)
    assert counts(pipeline.database)["dicom_image_meta"] == len({(e.tenant_id, e.sop_uid) for e in events})
    # the files the consumer could not have indexed were refused at the door, each group with its reason
    out = done.stdout
    assert "skipped" in out and "failed    │ 0" in out.replace("┃", "│")
    for reason in ("truncated file", "not DICOM", "Study Instance UID (required) is missing or empty"):
        assert f"  {reason}" in out, out
