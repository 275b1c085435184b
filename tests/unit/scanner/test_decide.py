"""What ``dicomflow publish`` does with a file, decided up front: the pure rule, then prepare() on real files."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from dicomflow.kafka.producer import Publisher
from dicomflow.scanner import decide
from dicomflow.scanner.publish import FolderPublisher, NotPublished, Prepared, Summary
from dicomflow.scanner.walk import Layout
from dicomflow.settings import Settings
from tests.conftest import PYDICOM_DATA

ROOT = Path("/data/storage")
CT = PYDICOM_DATA / "test_files" / "CT_small.dcm"  # Part 10
RAW = PYDICOM_DATA / "test_files" / "rtstruct.dcm"  # a data set without preamble or meta


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("/data/storage", True),
        ("/data/storage/t/20240101/a.dcm", True),
        ("/data/storage-old/a.dcm", False),  # a common prefix is not a parent
        ("/data/a.dcm", False),
        ("/elsewhere/storage/a.dcm", False),
    ],
)
def test_is_under_is_the_consumers_test(path: str, inside: bool) -> None:
    assert decide.is_under(Path(path), ROOT) is inside


def test_only_no_copy_refuses_a_file_outside_the_root_before_reading_it() -> None:
    outside, inside = Path("/incoming/a.dcm"), ROOT / "a.dcm"
    assert decide.refusal_before_reading(outside, ROOT, copy=True) is None
    assert decide.refusal_before_reading(inside, ROOT, copy=True) is None
    assert decide.refusal_before_reading(inside, ROOT, copy=False) is None
    reason = decide.refusal_before_reading(outside, ROOT, copy=False)
    assert reason is not None
    assert reason.startswith("outside the storage root:") and str(ROOT) in reason and str(outside) in reason


@pytest.mark.parametrize(
    ("inside", "layout", "copy", "expected"),
    [
        (False, "part10", True, "copy"),  # the default: whatever is outside is copied in
        (False, "raw", True, "copy"),
        (False, "meta-no-preamble", True, "copy"),
        (True, "part10", True, "in-place"),  # already under the root: published where it is
        (True, "raw", True, "copy"),  # ... unless its copy gets the Part 10 header it lacks
        (True, "meta-no-preamble", True, "copy"),
        (True, "part10", False, "in-place"),  # --no-copy: never a copy
        (True, "raw", False, "in-place"),
    ],
)
def test_where_a_file_is_published_from(inside: bool, layout: Layout, copy: bool, expected: str) -> None:
    assert decide.where(inside_root=inside, layout=layout, copy=copy) == expected


def test_outside_root_checks_the_paths_given_with_links_resolved(tmp_path: Path) -> None:
    root = (tmp_path / "root").resolve()
    (root / "in").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "link-out").symlink_to(tmp_path / "out")  # under the root by name, outside by target
    (tmp_path / "link-in").symlink_to(root / "in")  # the reverse
    given = [root, root / "in", root / "link-out", tmp_path / "out", tmp_path / "link-in", root / "in" / ".." / ".." / "out"]
    assert decide.outside_root(given, root) == [root / "link-out", tmp_path / "out", root / "in" / ".." / ".." / "out"]


def test_the_no_copy_refusal_names_the_root_the_paths_and_the_way_out() -> None:
    message = decide.no_copy_refusal([Path(f"/incoming/{n}") for n in range(8)], ROOT)
    assert "nothing published" in message and f"storage root {ROOT}" in message
    assert "/incoming/0, /incoming/1" in message and "/incoming/4" in message and "/incoming/5" not in message
    assert "and 3 more" in message
    assert "without --no-copy" in message


# ---------------------------------------------------------------- the summary


def test_every_outcome_lands_in_one_list_and_only_unreadable_or_failed_files_fail_the_run() -> None:
    summary = Summary()
    summary.add(NotPublished(Path("a.txt"), "not DICOM: no DICM prefix and no data set start"))
    summary.add(NotPublished(Path("b.dcm"), "not DICOM: empty file"))
    summary.add(NotPublished(Path("c.dcm"), "already stored with identical content: /x", "skipped"))
    assert summary.ok and [len(summary.refused), len(summary.skipped), len(summary.failed)] == [2, 1, 0]
    assert summary.refused_reasons() == {"not DICOM": 2}
    summary.add(NotPublished(Path("d.dcm"), "cannot read: No such file or directory", retry=True))
    assert not summary.ok and len(summary.refused) == 3
    retried = Summary()
    retried.add(NotPublished(Path("e.dcm"), "Kafka did not acknowledge: timeout", "failed"))
    assert not retried.ok and retried.failed[0].failed


# ---------------------------------------------------------------- prepare() on real files (it never publishes)


def publisher_for(tmp_path: Path, *, copy: bool) -> FolderPublisher:
    settings = Settings()
    settings = replace(settings, storage=replace(settings.storage, root=tmp_path / "root"))
    (tmp_path / "root").mkdir(exist_ok=True)
    return FolderPublisher(settings, cast(Publisher, None), copy_into_storage=copy)


def test_by_default_a_file_outside_the_root_is_copied_and_one_inside_is_published_in_place(tmp_path: Path) -> None:
    folder = publisher_for(tmp_path, copy=True)
    root = folder.ingestor.root
    shutil.copyfile(CT, tmp_path / "outside.dcm")
    shutil.copyfile(CT, root / "inside.dcm")
    outside, inside = folder.prepare(tmp_path / "outside.dcm"), folder.prepare(root / "inside.dcm")
    assert isinstance(outside, Prepared) and outside.copied
    assert Path(outside.event.file_path) == folder.ingestor.path_of(outside.identity)
    assert Path(outside.event.file_path).read_bytes() == CT.read_bytes()
    assert isinstance(inside, Prepared) and not inside.copied
    assert inside.event.file_path == str(root / "inside.dcm")


def test_a_raw_data_set_under_the_root_is_copied_to_get_its_header(tmp_path: Path) -> None:
    folder = publisher_for(tmp_path, copy=True)
    shutil.copyfile(RAW, folder.ingestor.root / "raw.bin")
    outcome = folder.prepare(folder.ingestor.root / "raw.bin")
    assert isinstance(outcome, Prepared) and outcome.copied
    assert Path(outcome.event.file_path).read_bytes()[128:132] == b"DICM"


def test_no_copy_refuses_outside_the_root_from_the_path_alone(tmp_path: Path) -> None:
    folder = publisher_for(tmp_path, copy=False)
    (tmp_path / "gone.dcm").symlink_to(tmp_path / "nowhere")  # opening it would fail: it is never opened
    os.mkfifo(tmp_path / "pipe.dcm")  # opening a FIFO for reading would wait for a writer
    shutil.copyfile(CT, tmp_path / "good.dcm")
    for name in ("gone.dcm", "pipe.dcm", "good.dcm"):
        outcome = folder.prepare(tmp_path / name)
        assert isinstance(outcome, NotPublished) and outcome.kind == "refused" and not outcome.retry, name
        assert outcome.reason.startswith("outside the storage root:"), outcome.reason
    assert list(folder.ingestor.root.iterdir()) == []  # nothing copied


def test_what_the_consumer_would_dead_letter_is_refused_with_its_reason(tmp_path: Path) -> None:
    """Unreadable here means that opening fails: as root, a chmod 000 file is readable, so links are used."""
    folder = publisher_for(tmp_path, copy=True)
    (tmp_path / "dangling.dcm").symlink_to(tmp_path / "nowhere")  # ENOENT
    (tmp_path / "loop.dcm").symlink_to(tmp_path / "loop.dcm")  # ELOOP
    os.mkfifo(tmp_path / "pipe.dcm")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty.dcm").write_bytes(b"")
    outcomes = {name: folder.prepare(tmp_path / name) for name in ("dangling.dcm", "loop.dcm", "pipe.dcm", "notes.txt", "empty.dcm")}
    reasons = {name: (o.kind, o.retry, o.reason) for name, o in outcomes.items() if isinstance(o, NotPublished)}
    assert reasons == {
        "dangling.dcm": ("refused", True, "cannot read: No such file or directory"),
        "loop.dcm": ("refused", True, "cannot read: Too many levels of symbolic links"),
        "pipe.dcm": ("refused", False, "cannot read: not a regular file (a FIFO, socket or device)"),
        "notes.txt": ("refused", False, "not DICOM: no DICM prefix and no data set start"),
        "empty.dcm": ("refused", False, "not DICOM: empty file"),
    }
    assert list(folder.ingestor.root.iterdir()) == []
