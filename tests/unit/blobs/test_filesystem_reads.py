"""FilesystemStore reads: a link out of the root is refused, the head of short and empty objects, a root gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.blobs.errors import BlobLocationError, BlobNotFound, BlobUnavailable
from dicomflow.blobs.filesystem import FilesystemStore
from dicomflow.errors import is_poison


def test_a_link_inside_the_root_pointing_outside_is_refused(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"not yours")
    (root / "a").mkdir()
    (root / "a" / "link.dcm").symlink_to(outside / "secret.dcm")
    (root / "dir").symlink_to(outside, target_is_directory=True)
    store = FilesystemStore(root, fsync=False)
    for key in ("a/link.dcm", "dir/secret.dcm"):
        with pytest.raises(BlobLocationError, match="outside the storage root"):
            store.read(key)
        with pytest.raises(BlobLocationError):
            store.read_head(key, 4)
        with pytest.raises(BlobLocationError):
            store.read_range(key, 0, 4)
        with pytest.raises(BlobLocationError):
            store.stream(key)
    with pytest.raises(BlobLocationError):
        store.read("../outside/secret.dcm")


def test_a_link_staying_inside_the_root_and_a_linked_root_are_read(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "root").symlink_to(real, target_is_directory=True)
    store = FilesystemStore(tmp_path / "root", fsync=False)
    store.put("x/a.dcm", b"0123456789")
    (real / "x" / "alias.dcm").symlink_to(real / "x" / "a.dcm")
    assert store.read("x/alias.dcm") == b"0123456789"
    assert store.read_head("x/a.dcm", 3) == (b"012", 10)
    with pytest.raises(BlobNotFound):
        store.read_head("x/absent.dcm", 3)


def test_read_head_of_a_short_and_an_empty_object(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path, fsync=False)
    store.put("short", b"abc")
    store.put("empty", b"")
    assert store.read_head("short", 8192) == (b"abc", 3)
    assert store.read_head("short", 0) == (b"", 3)
    assert store.read_head("empty", 8192) == (b"", 0)
    with pytest.raises(ValueError):
        store.read_head("short", -1)


def test_a_missing_file_is_poison_but_a_missing_root_is_an_outage(tmp_path: Path) -> None:
    """An unmounted volume must pause the workers and answer 503, not dead-letter every instance as missing."""
    root = tmp_path / "root"
    store = FilesystemStore(root, fsync=False)
    store.put("a/held.dcm", b"x")
    with pytest.raises(BlobNotFound) as missing:
        store.read("a/gone.dcm")
    assert is_poison(missing.value)
    root.rename(tmp_path / "unmounted")
    for read in (lambda: store.read("a/held.dcm"), lambda: store.read_head("a/held.dcm", 1),
                 lambda: store.stream("a/held.dcm"), lambda: store.head("a/held.dcm")):
        with pytest.raises(BlobUnavailable, match=r"storage root .* is missing") as gone:
            read()
        assert not is_poison(gone.value)
