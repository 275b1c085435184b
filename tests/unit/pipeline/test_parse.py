"""Storage-root check (``..``, absolute paths, symlinks), store-event decoding, UID check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicomflow.errors import PoisonMessageError
from dicomflow.kafka.records import Record
from dicomflow.models import encode
from dicomflow.pipeline.parse import decode_event
from dicomflow.pipeline.parse_worker import FILE_MISSING, OUTSIDE_ROOT, WIRE_FORMAT, resolve_in_root
from dicomflow.pipeline.types import ParsedBatch, Poison


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "storage"
    (r / "t1" / "study").mkdir(parents=True)
    (r / "t1" / "study" / "a.dcm").write_bytes(b"x")
    (tmp_path / "secret.dcm").write_bytes(b"s")
    return r


def test_absolute_path_inside_the_root_resolves(root: Path) -> None:
    assert resolve_in_root(root, str(root / "t1" / "study" / "a.dcm")) == (root / "t1" / "study" / "a.dcm").resolve()


def test_relative_path_is_taken_from_the_root(root: Path) -> None:
    assert resolve_in_root(root, "t1/study/a.dcm") == (root / "t1/study/a.dcm").resolve()


@pytest.mark.parametrize(
    "path",
    [
        "../secret.dcm",
        "t1/../../secret.dcm",
        "t1/study/../../../secret.dcm",
        "/etc/passwd",
    ],
)
def test_paths_escaping_the_root_are_rejected(root: Path, path: str) -> None:
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, path)
    assert info.value.error_class == OUTSIDE_ROOT


def test_absolute_path_with_dotdot_escaping_is_rejected(root: Path) -> None:
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, f"{root}/t1/../../secret.dcm")
    assert info.value.error_class == OUTSIDE_ROOT


def test_sibling_folder_sharing_the_root_prefix_is_outside(root: Path) -> None:
    twin = root.parent / (root.name + "2")
    twin.mkdir()
    (twin / "b.dcm").write_bytes(b"x")
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, str(twin / "b.dcm"))
    assert info.value.error_class == OUTSIDE_ROOT


def test_symlink_inside_the_root_pointing_outside_is_rejected(root: Path) -> None:
    link = root / "t1" / "study" / "link.dcm"
    os.symlink(root.parent / "secret.dcm", link)
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, str(link))
    assert info.value.error_class == OUTSIDE_ROOT


def test_symlinked_directory_pointing_outside_is_rejected(root: Path) -> None:
    os.symlink(root.parent, root / "t1" / "escape")
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, "t1/escape/secret.dcm")
    assert info.value.error_class == OUTSIDE_ROOT


def test_symlink_staying_inside_the_root_is_accepted_and_resolved(root: Path) -> None:
    link = root / "t1" / "alias.dcm"
    os.symlink(root / "t1" / "study" / "a.dcm", link)
    assert resolve_in_root(root, str(link)) == (root / "t1" / "study" / "a.dcm").resolve()


def test_root_reached_through_a_symlink_still_works(root: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias-root"
    os.symlink(root, alias)
    assert resolve_in_root(alias, str(root / "t1" / "study" / "a.dcm")) == (root / "t1/study/a.dcm").resolve()


def test_missing_file_inside_the_root_is_file_missing(root: Path) -> None:
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, "t1/study/nope.dcm")
    assert info.value.error_class == FILE_MISSING


def test_a_directory_is_not_a_file(root: Path) -> None:
    with pytest.raises(PoisonMessageError) as info:
        resolve_in_root(root, "t1/study")
    assert info.value.error_class == FILE_MISSING


@pytest.mark.parametrize("path", ["", "t1/a\x00.dcm"])
def test_empty_or_nul_paths_are_rejected(root: Path, path: str) -> None:
    with pytest.raises(PoisonMessageError):
        resolve_in_root(root, path)


def _record(value: bytes | None, offset: int = 0) -> Record:
    return Record("storage_queue", 1, offset, b"key", value)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"trace_id": "x"}', "DicomStoreMeta"),
        (b"[]", "DicomStoreMeta"),
        (None, "empty message"),
        (b"", "empty message"),
    ],
)
def test_undecodable_store_events_are_wire_format_poison(value: bytes | None, needle: str) -> None:
    result = decode_event(_record(value))
    assert isinstance(result, Poison)
    assert result.error_class == WIRE_FORMAT
    assert needle in result.reason


def test_a_valid_store_event_decodes(tmp_path: Path) -> None:
    from dicomflow.corpus import make_corpus

    event = make_corpus(tmp_path, 1).events[0]
    assert decode_event(_record(encode(event))) == event


def test_parsed_batch_offsets_forget_revoked_partitions() -> None:
    items: list[Poison] = [
        Poison(Record("t", 0, 4, None, b""), WIRE_FORMAT, "x"),
        Poison(Record("t", 1, 9, None, b""), WIRE_FORMAT, "x"),
    ]
    batch = ParsedBatch(list(items), 0.0)
    assert batch.offsets() == {("t", 0): 5, ("t", 1): 10}
    assert batch.drop_partitions({("t", 0)}) == 1
    assert batch.offsets() == {("t", 1): 10}
    assert batch.poison == [items[1]]


def test_a_dead_worker_loses_nothing_the_batch_is_parsed_again(tmp_path: Path) -> None:
    import signal

    from dicomflow.corpus import make_corpus
    from dicomflow.pipeline.batch import Batch
    from dicomflow.pipeline.parse import Parser
    from dicomflow.pipeline.types import Parsed

    events = make_corpus(tmp_path / "root", 30, studies=1, series_per_study=2).events
    parser = Parser(tmp_path / "root", workers=1)
    try:
        parser.start()
        pool = parser._pool
        assert pool is not None
        for pid in list(pool._processes):  # the OOM killer strikes between batches
            os.kill(pid, signal.SIGKILL)
        parsed = parser.parse(Batch([Record("q", 0, i, b"k", encode(e)) for i, e in enumerate(events)]))
        assert parser._pool is not pool  # a fresh pool took over
    finally:
        parser.close()
    assert len(parsed.good) == 30 and not parsed.poison
    assert [p.image.sop_uid for p in parsed.good if isinstance(p, Parsed)] == [e.sop_uid for e in events]


def test_an_io_error_is_transient_not_poison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EIO on the storage (an NFS hiccup) must retry the batch, not dead-letter good instances."""
    import errno

    import dicomflow.extract.header as header
    from dicomflow.corpus import make_corpus
    from dicomflow.pipeline.parse_worker import STORAGE_UNAVAILABLE, UNREADABLE_DICOM, Task, parse_task

    event = make_corpus(tmp_path / "root", 1).events[0]
    task = Task(event.file_path, event.tenant_id, event.created_time, event.study_uid, event.series_uid, event.sop_uid)

    def failing(exc: OSError) -> object:
        def extract(*_args: object, **_kwargs: object) -> object:
            raise exc
        return extract

    monkeypatch.setattr(header, "extract_file", failing(OSError(errno.EIO, "Input/output error")))
    outcome = parse_task(str(tmp_path / "root"), task)
    assert outcome.transient and outcome.error_class == STORAGE_UNAVAILABLE

    monkeypatch.setattr(header, "extract_file", failing(PermissionError(errno.EACCES, "Permission denied")))
    outcome = parse_task(str(tmp_path / "root"), task)
    assert not outcome.transient and outcome.error_class == UNREADABLE_DICOM

    monkeypatch.setattr(header, "extract_file", failing(OSError("No tag to read at file position 90CA")))
    outcome = parse_task(str(tmp_path / "root"), task)
    assert not outcome.transient and outcome.error_class == UNREADABLE_DICOM

    monkeypatch.undo()
    assert parse_task(str(tmp_path / "root"), task).image is not None


def test_parser_raises_storage_read_error_for_a_transient_outcome(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomflow.corpus import make_corpus
    from dicomflow.pipeline.batch import Batch
    from dicomflow.pipeline.parse import Parser, StorageReadError
    from dicomflow.pipeline.parse_worker import STORAGE_UNAVAILABLE, Outcome

    event = make_corpus(tmp_path / "root", 1).events[0]
    parser = Parser(tmp_path / "root", workers=1)
    monkeypatch.setattr(parser, "_run", lambda tasks: [Outcome(error_class=STORAGE_UNAVAILABLE, reason="EIO", transient=True)])
    with pytest.raises(StorageReadError) as info:
        parser.parse(Batch([Record("q", 0, 0, b"k", encode(event))]))
    assert not info.value.poison
    parser.close()
