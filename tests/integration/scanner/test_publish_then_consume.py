"""The validity rule end to end: what ``dicomflow publish`` accepts, the consumer indexes; nothing reaches the DLQ.

pydicom's bundled data folder holds good files next to broken ones
(truncated pixel data, data sets without UIDs, DICOMDIRs, non-DICOM). The
command is run as a user runs it, with its defaults, over folders outside the
storage root (so every file is copied in); then the consumer runs until idle
on the real broker and PostgreSQL. Every published store event must be
indexed, none dead-lettered, and the command's summary must list each refused
file with its reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from dicomflow.models import DicomStoreMeta, decode
from dicomflow.settings import Settings, to_child_env
from tests.conftest import PYDICOM_DATA
from tests.integration.consumer_support import counts, pipeline, query, run_service, topic

__all__ = ["pipeline"]  # the fixture, re-exported for pytest


def publish(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``dicomflow publish ARGS`` in its own process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-c", "from dicomflow.cli import main; main()", "publish", "--no-progress", *args],
        env={**to_child_env(settings, os.environ), "COLUMNS": "400"}, cwd=cwd,
        capture_output=True, text=True, timeout=300,
    )


def test_publishing_the_whole_sample_folder_with_the_defaults_dead_letters_nothing(
    pipeline: Settings, tmp_path: Path
) -> None:
    assert not PYDICOM_DATA.resolve().is_relative_to(pipeline.storage.root.resolve())
    done = publish(pipeline, str(PYDICOM_DATA), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    events = [decode(r.value, DicomStoreMeta) for r in topic(pipeline, pipeline.topics.main)]
    assert len(events) > 100
    root = pipeline.storage.root.resolve()
    assert all(Path(e.file_path).is_relative_to(root) for e in events)  # every file copied in

    summary = run_service(pipeline)

    assert summary.dead_lettered == 0
    assert topic(pipeline, f"{pipeline.topics.main}.dlq") == []
    assert summary.instances == len(events)
    assert counts(pipeline.database)["dicom_image_meta"] == len({(e.tenant_id, e.sop_uid) for e in events})
    # the files the consumer could not have indexed were refused at the door, each group with its reason
    out = done.stdout.replace("┃", "│")
    assert "refused" in out and "failed    │ 0" in out
    for reason in ("truncated file", "not DICOM", "Study Instance UID (required) is missing or empty"):
        assert f"  {reason}" in out, out


def test_a_mixed_folder_gets_its_good_files_indexed_and_the_rest_listed_as_refused(
    pipeline: Settings, tmp_path: Path
) -> None:
    """Good files, a text file, and files that cannot be read.

    The tests run as root, which reads a chmod 000 file, so "unreadable"
    is made the honest way that works for root too: a dangling symbolic link
    (open fails with ENOENT, as for a file on an unmounted volume) and a
    link loop (ELOOP); plus a FIFO, which is not a regular file (opening it
    for reading would wait for a writer forever).
    """
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = ["CT_small.dcm", "MR_small.dcm", "rtstruct.dcm"]  # rtstruct: a raw data set, its copy gets a header
    for name in good:
        shutil.copyfile(PYDICOM_DATA / "test_files" / name, folder / name)
    (folder / "report.txt").write_text("not an image")
    (folder / "gone.dcm").symlink_to(tmp_path / "unmounted" / "gone.dcm")
    (folder / "loop.dcm").symlink_to(folder / "loop.dcm")
    os.mkfifo(folder / "pipe.dcm")

    done = publish(pipeline, str(folder), cwd=tmp_path)

    assert done.returncode == 1, done.stdout + done.stderr  # files that could not be read: worth a retry once fixed
    out = done.stdout.replace("┃", "│")
    assert "published │ 3" in out and "refused   │ 4" in out and "failed    │ 0" in out
    for name, reason in (
        ("report.txt", "not DICOM: no DICM prefix and no data set start"),
        ("gone.dcm", "cannot read: No such file or directory"),
        ("loop.dcm", "cannot read: Too many levels of symbolic links"),
        ("pipe.dcm", "cannot read: not a regular file"),
    ):
        assert f"{folder / name}: {reason}" in out, out
    events = [decode(r.value, DicomStoreMeta) for r in topic(pipeline, pipeline.topics.main)]
    assert len(events) == 3

    summary = run_service(pipeline)

    assert summary.dead_lettered == 0 and summary.instances == 3
    assert topic(pipeline, f"{pipeline.topics.main}.dlq") == []
    indexed = {row[0] for row in query(pipeline.database, "SELECT sop_uid FROM dicom_image_meta")}
    assert indexed == {e.sop_uid for e in events}
