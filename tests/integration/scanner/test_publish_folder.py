"""``dicomflow publish``: folders of files in, store events on the real broker out."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from dicomflow.kafka.producer import Publisher
from dicomflow.models import series_key
from dicomflow.scanner.publish import FolderPublisher, Summary
from dicomflow.scanner.walk import iter_files
from dicomflow.settings import KafkaSettings, Settings
from tests.conftest import PYDICOM_DATA
from tests.integration.ingest_support import (
    Sample,
    build_sample_corpus,
    free_port,
    make_topics,
    read_audit,
    read_dataset,
    read_store_events,
    stored_files,
)


@pytest.fixture
def pub_settings(settings: Settings) -> Settings:
    make_topics(settings)
    return settings


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    return build_sample_corpus(tmp_path_factory.mktemp("samples"))


def messy_folder(folder: Path, samples: list[Sample]) -> dict[str, list[str]]:
    """A folder as found in the wild: odd names, nesting, raw data sets, junk. Returns what to expect."""
    expected: dict[str, list[str]] = {"published": [], "refused": []}
    for i, sample in enumerate(samples):
        sub = folder / f"series{i % 3}" / ("deeper" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        name = f"IM{i:06d}" if i % 2 else f"{sample.sop_uid}.DCM"  # by content, not by extension
        shutil.copyfile(sample.path, sub / name)
        expected["published"].append(sample.sop_uid)
    # raw data sets without preamble or meta, as some exports write them
    for raw in ("rtstruct.dcm", "ExplVR_BigEndNoMeta.dcm"):
        shutil.copyfile(PYDICOM_DATA / "test_files" / raw, folder / f"raw_{raw}.bin")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected["published"].append(str(pydicom.dcmread(PYDICOM_DATA / "test_files" / raw, force=True).SOPInstanceUID))
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.dcm").write_bytes(b"")
    (folder / "fake.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"garbage" * 10)
    (folder / ".partial.dcm.tmp").write_bytes(b"hidden: never looked at")
    expected["refused"] = ["notes.txt", "empty.dcm", "fake.dcm"]
    return expected


def run(settings: Settings, paths: list[Path], **kwargs: object) -> Summary:
    with Publisher(settings.kafka, settings.topics) as publisher:
        return FolderPublisher(settings, publisher, **kwargs).run(list(iter_files(paths)))  # type: ignore[arg-type]


def test_by_default_every_dicom_file_is_copied_in_and_published_and_the_rest_refused(
    pub_settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"  # outside the storage root
    expected = messy_folder(incoming, samples)
    summary = run(pub_settings, [incoming])

    assert summary.failed == [] and summary.skipped == []
    assert sorted(s.path.name for s in summary.refused) == sorted(expected["refused"])
    assert sorted(p.event.sop_uid for p in summary.published) == sorted(expected["published"])
    assert summary.copied == len(summary.published)

    root = pub_settings.storage.root.resolve()
    files = {f.stem: f for f in stored_files(root)}
    assert sorted(files) == sorted(expected["published"])
    events = read_store_events(pub_settings, pub_settings.topics.main)
    receipts = read_store_events(pub_settings, pub_settings.topics.log)
    assert Counter(e.sop_uid for _, e in events) == Counter(expected["published"])
    assert sorted(e.trace_id for _, e in receipts) == sorted(e.trace_id for _, e in events)
    for record, event in events:
        assert record.key == series_key(event.tenant_id, event.patient_id, event.study_uid, event.series_uid).encode()
        path = Path(event.file_path)
        assert path == files[event.sop_uid]
        assert path.stat().st_size == event.file_size
        stored = read_dataset(path)  # raw data sets got a preamble and meta information
        assert stored.file_meta.TransferSyntaxUID == event.transfer_syntax_uid
        assert stored.SOPInstanceUID == event.sop_uid
        assert (event.source_ae, event.worker_node_id) == ("PUBLISH", pub_settings.worker_node_id)
    # Part 10 files are copied byte for byte
    by_sop = {s.sop_uid: s for s in samples}
    for sop, path in files.items():
        if sop in by_sop:
            assert path.read_bytes() == by_sop[sop].path.read_bytes()
    transferred = [a for a in read_audit(pub_settings) if a.event_id.code == "110104"]
    assert sum(int(a.participant_objects[0].details["instance_count"]) for a in transferred) == len(expected["published"])
    assert len({a.participant_objects[0].object_id for a in transferred}) == len(transferred)


def place_samples(root: Path, tmp_path: Path, samples: list[Sample]) -> tuple[Path, Path]:
    """Five samples in a folder under the storage root, three in one outside it."""
    inside, outside = root / "already-here", tmp_path / "elsewhere"
    for folder, chosen in ((inside, samples[:5]), (outside, samples[5:8])):
        folder.mkdir(parents=True)
        for sample in chosen:
            shutil.copyfile(sample.path, folder / sample.path.name)
    return inside, outside


def test_files_under_the_root_are_published_in_place_those_outside_copied_in(
    pub_settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    root = pub_settings.storage.root.resolve()
    inside, outside = place_samples(root, tmp_path, samples)
    summary = run(pub_settings, [inside, outside])
    assert len(summary.published) == 8 and summary.copied == 3 and summary.ok
    paths = {e.sop_uid: Path(e.file_path) for _, e in read_store_events(pub_settings, pub_settings.topics.main)}
    for sample in samples[:5]:
        assert paths[sample.sop_uid] == inside / sample.path.name
    for sample in samples[5:8]:
        assert paths[sample.sop_uid].is_relative_to(root) and paths[sample.sop_uid].parent != inside
        assert paths[sample.sop_uid].read_bytes() == sample.path.read_bytes()
    assert len(stored_files(root)) == 8


def test_without_copy_files_outside_the_root_are_refused_and_never_published(
    pub_settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    root = pub_settings.storage.root.resolve()
    inside, outside = place_samples(root, tmp_path, samples)
    (inside / "escape.dcm").symlink_to(outside / samples[5].path.name)  # under the root by name only
    summary = run(pub_settings, [inside, outside], copy_into_storage=False)
    assert len(summary.published) == 5 and summary.copied == 0 and summary.ok
    assert sorted(r.path.name for r in summary.refused) == sorted([*(s.path.name for s in samples[5:8]), "escape.dcm"])
    assert all(r.reason.startswith("outside the storage root:") and str(root) in r.reason for r in summary.refused)
    paths = {e.sop_uid: Path(e.file_path) for _, e in read_store_events(pub_settings, pub_settings.topics.main)}
    assert paths == {s.sop_uid: inside / s.path.name for s in samples[:5]}
    copies = [f for f in stored_files(root) if not f.is_symlink()]
    assert sorted(copies) == sorted(inside / s.path.name for s in samples[:5])  # nothing copied


def test_the_tenant_option_places_and_labels_every_file(pub_settings: Settings, samples: list[Sample], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in samples[:4]:
        shutil.copyfile(sample.path, folder / sample.path.name)
    summary = run(pub_settings, [folder], tenant="research")
    assert len(summary.published) == 4
    assert {e.tenant_id for _, e in read_store_events(pub_settings, pub_settings.topics.main)} == {"research"}
    root = pub_settings.storage.root.resolve()
    assert {p.relative_to(root).parts[0] for p in stored_files(root)} == {"research"}


def cli(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DICOMFLOW_KAFKA_BROKERS": settings.kafka.brokers,
        "DICOMFLOW_KAFKA_MESSAGE_TIMEOUT_MS": str(settings.kafka.message_timeout_ms),
        "DICOMFLOW_TOPICS_MAIN": settings.topics.main,
        "DICOMFLOW_TOPICS_LOG": settings.topics.log,
        "DICOMFLOW_TOPICS_AUDIT": settings.topics.audit,
        "DICOMFLOW_STORAGE_ROOT": str(settings.storage.root),
        "COLUMNS": "200",
    }
    env.pop("DICOMFLOW_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "dicomflow.cli", "publish", "--no-progress", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_command_prints_a_summary_and_exits_zero(pub_settings: Settings, samples: list[Sample], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in samples[:3]:
        shutil.copyfile(sample.path, folder / sample.path.name)
    (folder / "readme.txt").write_text("hello")
    result = cli(pub_settings, str(folder), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "published │ 3" in result.stdout and "copied    │ 3" in result.stdout and "refused   │ 1" in result.stdout
    assert "not DICOM" in result.stdout and "readme.txt" in result.stdout
    assert len(stored_files(pub_settings.storage.root)) == 3
    # the old flag names the default now: still accepted, with a note
    again = cli(pub_settings, str(folder), "--copy-into-storage", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "--copy-into-storage is deprecated" in again.stderr
    assert "skipped   │ 3" in again.stdout and "already stored with identical content" in again.stdout


def test_every_refused_path_is_listed_with_list_all(pub_settings: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    names = [f"note{n:02d}-{'x' * 150}.txt" for n in range(25)]  # long lines are not wrapped: one per file
    for name in names:
        (folder / name).write_text("not an image")
    short = cli(pub_settings, str(folder), cwd=tmp_path)
    assert short.returncode == 0, short.stderr
    assert "refused   │ 25" in short.stdout and "... and 5 more (--list-all lists them)" in short.stdout
    assert sum(f"{folder / name}: not DICOM" in line for name in names for line in short.stdout.splitlines()) == 20
    every = cli(pub_settings, str(folder), "--list-all", cwd=tmp_path)
    assert every.returncode == 0, every.stderr
    assert sum(f"{folder / name}: not DICOM" in line for name in names for line in every.stdout.splitlines()) == 25
    assert "more (--list-all" not in every.stdout


def test_no_copy_outside_the_root_is_refused_before_anything_is_published(
    pub_settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    root = pub_settings.storage.root.resolve()
    inside, outside = place_samples(root, tmp_path, samples)
    result = cli(pub_settings, str(inside), str(outside), "--no-copy", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    [message] = [line for line in result.stderr.splitlines() if "refused" in line]  # one line, never wrapped
    assert f"storage root {root}" in message and str(outside) in message and "without --no-copy" in message
    assert "nothing published" in message
    assert read_store_events(pub_settings, pub_settings.topics.main) == []  # not even the files under the root
    assert read_store_events(pub_settings, pub_settings.topics.log) == []
    assert sorted(stored_files(root)) == sorted(inside / s.path.name for s in samples[:5])  # nothing copied

    both = cli(pub_settings, str(inside), "--no-copy", "--copy-into-storage", cwd=tmp_path)
    assert both.returncode == 2 and "contradict" in both.stderr
    assert read_store_events(pub_settings, pub_settings.topics.main) == []

    under = cli(pub_settings, str(inside), "--no-copy", cwd=tmp_path)
    assert under.returncode == 0, under.stdout + under.stderr
    assert "published │ 5" in under.stdout and "copied    │ 0" in under.stdout
    assert len(read_store_events(pub_settings, pub_settings.topics.main)) == 5


def test_kafka_down_fails_every_file_and_the_exit_code_says_so(
    settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    dead = dataclasses.replace(settings, kafka=KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=1500))
    result = cli(dead, str(samples[0].path), str(samples[1].path), cwd=tmp_path)
    assert result.returncode == 1
    assert "failed    │ 2" in result.stdout
    assert "Kafka did not acknowledge" in result.stdout
