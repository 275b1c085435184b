"""Atomic durable writes: complete file or nothing, replace in place, no temporary left over."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import pytest

from dicomflow.ingest import storage
from dicomflow.ingest.exceptions import OUT_OF_RESOURCES, StorageWriteError
from dicomflow.ingest.storage import PendingFile, make_folders, sync_folder_durably, write_atomic


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob(".*.tmp")]


@pytest.mark.parametrize("fsync", [True, False])
def test_writes_the_chunks_in_order_and_creates_folders(tmp_path: Path, fsync: bool) -> None:
    target = tmp_path / "t" / "20240101" / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    size = write_atomic(target, (b"head", b"", b"body" * 1000), fsync=fsync)
    assert size == 4 + 4000
    assert target.read_bytes() == b"head" + b"body" * 1000
    assert leftovers(tmp_path) == []


def test_a_second_write_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "a.dcm"
    write_atomic(target, (b"first version",))
    inode_before = target.stat().st_ino
    write_atomic(target, (b"second",))
    assert target.read_bytes() == b"second"
    assert target.stat().st_ino != inode_before  # a new file renamed over, not rewritten in place
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("failing", ["write", "sync"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "a.dcm"
    write_atomic(target, (b"good copy",))
    real_write = os.write

    def disk_full_after_a_few_bytes(fd: int, data: bytes | memoryview) -> int:
        if len(data) > 4:
            real_write(fd, bytes(data)[:4])
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    def io_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    if failing == "write":
        monkeypatch.setattr(os, "write", disk_full_after_a_few_bytes)
    else:
        monkeypatch.setattr(storage, "_sync_data", io_error)
    with pytest.raises(StorageWriteError, match=r"No space left|Input/output error") as info:
        write_atomic(target, (b"a much longer new version",))
    monkeypatch.undo()
    assert not info.value.poison  # out of resources: the sender retries
    assert target.read_bytes() == b"good copy"
    assert leftovers(tmp_path) == []


def test_data_is_synced_before_the_rename_and_the_folder_after(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    target = tmp_path / "a.dcm"
    monkeypatch.setattr(storage, "_sync_data", lambda fd: steps.append(f"data, renamed={target.exists()}"))
    monkeypatch.setattr(storage, "fsync_folder", lambda folder: steps.append(f"folder, renamed={target.exists()}"))
    write_atomic(target, (b"x",))
    assert steps == ["data, renamed=False", "folder, renamed=True"]
    steps.clear()
    target = tmp_path / "b.dcm"
    write_atomic(target, (b"y",), sync_folder=False)  # the caller syncs the folder itself
    assert steps == ["data, renamed=False"]
    steps.clear()
    write_atomic(tmp_path / "new" / "c.dcm", (b"z",), fsync=False)
    assert steps == []


def test_a_pending_file_commits_as_seal_then_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps: list[str] = []
    target = tmp_path / "s" / "a.dcm"
    pending = PendingFile(target)
    monkeypatch.setattr(storage, "_sync_data", lambda fd: steps.append(f"data, renamed={target.exists()}"))
    monkeypatch.setattr(storage, "fsync_folder", lambda folder: steps.append(f"folder, renamed={target.exists()}"))
    pending.write(b"head")
    pending.write(b"body")
    assert not target.exists()  # nothing under the final name before the commit
    assert pending.commit() == 8
    assert steps == ["data, renamed=False", "folder, renamed=True"]
    assert target.read_bytes() == b"headbody" and leftovers(tmp_path) == []
    pending.discard()  # after the commit: nothing to remove, the file stays
    assert target.read_bytes() == b"headbody"
    with pytest.raises(StorageWriteError, match="already closed"):
        pending.commit()


def test_a_sealed_file_is_not_in_place_and_discard_removes_it(tmp_path: Path) -> None:
    pending = PendingFile(tmp_path / "a.dcm", fsync=False)
    pending.write(b"data")
    assert pending.seal() == 4
    assert pending.temp.read_bytes() == b"data" and not pending.path.exists()
    pending.discard()
    assert leftovers(tmp_path) == [] and not pending.path.exists()


def test_new_folders_are_made_durable_in_their_parents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[Path] = []
    monkeypatch.setattr(storage, "fsync_folder", synced.append)
    write_atomic(tmp_path / "t" / "s" / "a.dcm", (b"x",))
    assert synced == [tmp_path, tmp_path / "t", tmp_path / "t" / "s"]


def test_a_failed_folder_sync_is_out_of_resources(tmp_path: Path) -> None:
    with pytest.raises(StorageWriteError, match="cannot sync the folder") as info:
        sync_folder_durably(tmp_path / "missing")
    assert not info.value.poison


def test_an_unexpected_error_also_removes_the_temporary(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        write_atomic(tmp_path / "a.dcm", (b"ok", object()))  # type: ignore[arg-type]
    assert not (tmp_path / "a.dcm").exists()
    assert leftovers(tmp_path) == []


def test_an_unwritable_place_is_out_of_resources(tmp_path: Path) -> None:
    blocker = tmp_path / "t"
    blocker.write_bytes(b"a file where a folder should be")
    with pytest.raises(StorageWriteError) as info:
        write_atomic(blocker / "20240101" / "x.dcm", (b"data",))
    assert info.value.status == OUT_OF_RESOURCES
    assert not info.value.poison


def test_a_read_only_folder_is_reported(tmp_path: Path) -> None:
    """A folder the process may not write to; as root (CI) permissions do not stop
    us, so the folder is a read-only tmpfs mount instead."""
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = False
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)
        mounted = True
    else:
        folder.chmod(0o500)
    try:
        with pytest.raises(StorageWriteError, match="cannot create the file"):
            write_atomic(folder / "x.dcm", (b"data",))
    finally:
        if mounted:
            subprocess.run(["umount", str(folder)], check=True)
        else:
            folder.chmod(0o700)


def test_concurrent_writers_of_new_folders_and_the_same_file(tmp_path: Path) -> None:
    target = tmp_path / "t" / "20240101" / "1.2" / "1.2.3" / "same.dcm"
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            write_atomic(target, (f"copy {i:02d}".encode(),))
            write_atomic(target.parent / f"{i}.dcm", (b"x",))
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes().startswith(b"copy ")
    assert len(target.read_bytes()) == 7
    assert len(list(target.parent.glob("*.dcm"))) == 17
    assert leftovers(tmp_path) == []


def test_make_folders_tolerates_existing_ones(tmp_path: Path) -> None:
    make_folders(tmp_path / "a" / "b")
    make_folders(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
