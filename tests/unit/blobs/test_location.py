"""Keys and locations: what a store event may name, and what is refused before any byte is touched."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.blobs import BlobLocationError, FilesystemStore, check_key, key_of_path, key_of_s3
from dicomflow.blobs.location import normalize_prefix, s3_location
from dicomflow.errors import is_poison

KEY = "default/20240101/1.2.3/1.2.3.4/1.2.3.4.5.dcm"


@pytest.mark.parametrize("key", [KEY, "a", "a/b", "t1/x y.dcm", "é/ü.dcm"])
def test_good_keys_pass_unchanged(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(("key", "problem"), [
    ("", "empty key"),
    ("/etc/passwd", "absolute"),
    ("a/../b", "'..' segment"),
    ("..", "'..' segment"),
    ("a/./b", "'.' or"),
    ("a//b", "empty, "),
    ("a/", "empty, "),
    ("a\\b", "backslash"),
    ("a\x00b", "NUL"),
    ("k" * 1025, "longer than 1024 bytes"),
])
def test_bad_keys_are_refused_as_poison(key: str, problem: str) -> None:
    with pytest.raises(BlobLocationError, match=problem) as info:
        check_key(key)
    assert is_poison(info.value)


def test_prefixes_are_normalized() -> None:
    assert normalize_prefix("") == ""
    assert normalize_prefix("/") == ""
    assert normalize_prefix("archive") == "archive/"
    assert normalize_prefix("/archive/2024/") == "archive/2024/"
    with pytest.raises(BlobLocationError):
        normalize_prefix("archive/../other")


def test_s3_locations_round_trip() -> None:
    loc = s3_location("bucket", "archive/", KEY)
    assert loc == f"s3://bucket/archive/{KEY}"
    assert key_of_s3(loc, "bucket", "archive/") == KEY
    assert key_of_s3(f"s3://bucket/{KEY}", "bucket", "") == KEY


@pytest.mark.parametrize(("location", "problem"), [
    (f"/data/{KEY}", "not an s3:// location"),
    (f"https://bucket/archive/{KEY}", "not an s3:// location"),
    (f"s3://other/archive/{KEY}", "bucket 'other' is not the configured 'bucket'"),
    (f"s3://bucket/{KEY}", "outside the configured prefix"),
    (f"s3://bucket/archivex/{KEY}", "outside the configured prefix"),
    ("s3://bucket/archive/../secret", "'..' segment"),
    ("s3://bucket/archive/", "empty key"),
    ("s3://bucket", "outside the configured prefix"),
])
def test_bad_s3_locations_are_refused(location: str, problem: str) -> None:
    with pytest.raises(BlobLocationError, match=problem):
        key_of_s3(location, "bucket", "archive/")


def test_paths_under_the_root_give_their_key(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    assert key_of_path(root / KEY, root) == KEY
    assert key_of_path(str(root / KEY), root) == KEY


def test_relative_paths_are_taken_from_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert key_of_path(f"storage/{KEY}", Path("storage")) == KEY
    assert key_of_path(tmp_path / "storage" / KEY, Path("storage")) == KEY


@pytest.mark.parametrize(("rel", "problem"), [
    ("../outside.dcm", "'..' in the path"),
    (f"default/../../{KEY}", "'..' in the path"),
    ("", "the storage root itself"),
])
def test_bad_paths_are_refused(tmp_path: Path, rel: str, problem: str) -> None:
    root = tmp_path / "storage"
    with pytest.raises(BlobLocationError, match=problem):
        key_of_path(f"{root}/{rel}" if rel else str(root), root)


def test_a_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BlobLocationError, match="outside the storage root"):
        key_of_path(tmp_path / "elsewhere" / "x.dcm", tmp_path / "storage")
    with pytest.raises(BlobLocationError, match="outside the storage root"):
        key_of_path(str(tmp_path / "storage-other" / "x.dcm"), tmp_path / "storage")


def test_the_filesystem_store_names_paths_and_reads_them_back(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "storage")
    loc = store.location(KEY)
    assert loc == str(tmp_path / "storage" / KEY)
    assert store.key_of(loc) == KEY
    with pytest.raises(BlobLocationError):
        store.location("../x")
