"""The duplicate decision on real files: new, identical, reject, keep, replace (with undo)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.dicom.part10 import file_header
from dicomflow.ingest.duplicates import DuplicateInstanceError, place, same_data_set

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.3.4"
SYNTAX = "1.2.840.10008.1.2.1"


def part10(folder: Path, name: str, body: bytes, *, sender: str = "A") -> Path:
    path = folder / name
    path.write_bytes(file_header(SOP_CLASS, SOP, SYNTAX, sender) + body)
    return path


def test_new_then_identical_from_another_sender_is_a_no_op(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    first = place(part10(tmp_path, "t1", b"\x08\x00" * 50), target, "reject")
    assert first.outcome == "new" and first.publish and target.exists()
    first.acknowledged()
    again = place(part10(tmp_path, "t2", b"\x08\x00" * 50, sender="OTHER_AE"), target, "reject")
    assert again.outcome == "identical" and not again.publish and not again.duplicate
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm"]


@pytest.mark.parametrize("policy", ["reject", "keep", "replace"])
def test_different_content(tmp_path: Path, policy: str) -> None:
    target = tmp_path / "x.dcm"
    place(part10(tmp_path, "t1", b"old!" * 10), target, "reject").acknowledged()
    old = target.read_bytes()
    temp = part10(tmp_path, "t2", b"new!" * 12)
    if policy == "reject":
        with pytest.raises(DuplicateInstanceError) as caught:
            place(temp, target, "reject")
        assert caught.value.status == 0x0111
        assert target.read_bytes() == old
    elif policy == "keep":
        placed = place(temp, target, "keep")
        assert placed.outcome == "kept" and not placed.publish and placed.duplicate
        assert target.read_bytes() == old
    else:
        new = temp.read_bytes()
        placed = place(temp, target, "replace")
        assert placed.outcome == "replaced" and placed.publish
        assert target.read_bytes() == new
        placed.not_acknowledged()  # Kafka did not take the new event: the old copy is back
        assert target.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm"]


def test_replace_acknowledged_drops_the_backup(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    place(part10(tmp_path, "t1", b"old!"), target, "replace").acknowledged()
    placed = place(part10(tmp_path, "t2", b"new!"), target, "replace")
    assert len(list(tmp_path.iterdir())) == 2  # the name and the hidden backup of the old copy
    placed.acknowledged()
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcm"] and target.read_bytes().endswith(b"new!")


def test_a_new_file_not_acknowledged_stays_and_its_identical_retry_is_published_again(tmp_path: Path) -> None:
    target = tmp_path / "x.dcm"
    place(part10(tmp_path, "t1", b"data"), target, "reject").not_acknowledged()
    # the event may still be delivered later: its file must be there
    assert target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".x.dcm.unacknowledged", "x.dcm"]
    retry = place(part10(tmp_path, "t2", b"data"), target, "reject")
    assert retry.outcome == "new" and retry.publish  # not "identical": nothing says the first event arrived
    retry.acknowledged()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm"]
    assert place(part10(tmp_path, "t3", b"data"), target, "reject").outcome == "identical"


def test_a_process_killed_before_the_acknowledgement_leaves_the_mark_and_the_retry_is_published(
        tmp_path: Path) -> None:
    """Neither acknowledged() nor not_acknowledged() ran (a SIGKILL between the name and Kafka's answer):
    the sender's identical retry must publish, not be answered Success with no store event (a fault run lost one)."""
    target = tmp_path / "x.dcm"
    place(part10(tmp_path, "t1", b"data"), target, "reject")  # the process dies here
    assert sorted(p.name for p in tmp_path.iterdir()) == [".x.dcm.unacknowledged", "x.dcm"]
    retry = place(part10(tmp_path, "t2", b"data"), target, "reject")
    assert retry.outcome == "new" and retry.publish
    retry.acknowledged()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dcm"]


def test_other_transfer_syntax_is_other_content(tmp_path: Path) -> None:
    a = part10(tmp_path, "a", b"same")
    b = tmp_path / "b"
    b.write_bytes(file_header(SOP_CLASS, SOP, "1.2.840.10008.1.2", "A") + b"same")
    assert not same_data_set(a, b)
