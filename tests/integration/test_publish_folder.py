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
    expected: dict[str, list[str]] = {"published": [], "skipped": []}
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
    expected["skipped"] = ["notes.txt", "empty.dcm", "fake.dcm"]
    return expected


def run(settings: Settings, paths: list[Path], **kwargs: object) -> Summary:
    with Publisher(settings.kafka, settings.topics) as publisher:
        return FolderPublisher(settings, publisher, **kwargs).run(list(iter_files(paths)))  # type: ignore[arg-type]


def test_copy_into_storage_publishes_every_dicom_file_and_skips_the_rest(
    pub_settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    incoming = tmp_path / "incoming"
    expected = messy_folder(incoming, samples)
    summary = run(pub_settings, [incoming], copy_into_storage=True)

    assert summary.failed == []
    assert sorted(s.path.name for s in summary.skipped) == sorted(expected["skipped"])
    assert sorted(p.event.sop_uid for p in summary.published) == sorted(expected["published"])
    assert summary.outside_root == []

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


def test_without_copy_files_are_published_where_they_are(pub_settings: Settings, samples: list[Sample], tmp_path: Path) -> None:
    root = pub_settings.storage.root.resolve()
    inside = root / "already-here"
    outside = tmp_path / "elsewhere"
    for folder, chosen in ((inside, samples[:5]), (outside, samples[5:8])):
        folder.mkdir(parents=True)
        for sample in chosen:
            shutil.copyfile(sample.path, folder / sample.path.name)
    summary = run(pub_settings, [inside, outside])
    assert len(summary.published) == 8 and summary.ok
    assert sorted(p.event.sop_uid for p in summary.outside_root) == sorted(s.sop_uid for s in samples[5:8])
    paths = {e.sop_uid: Path(e.file_path) for _, e in read_store_events(pub_settings, pub_settings.topics.main)}
    for sample in samples[:5]:
        assert paths[sample.sop_uid] == inside / sample.path.name
    for sample in samples[5:8]:
        assert paths[sample.sop_uid] == outside / sample.path.name
    assert sorted(stored_files(root)) == sorted(inside / s.path.name for s in samples[:5])  # nothing copied


def test_the_tenant_option_places_and_labels_every_file(pub_settings: Settings, samples: list[Sample], tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for sample in samples[:4]:
        shutil.copyfile(sample.path, folder / sample.path.name)
    summary = run(pub_settings, [folder], copy_into_storage=True, tenant="research")
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
    result = cli(pub_settings, str(folder), "--copy-into-storage", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "published │ 3" in result.stdout
    assert "not DICOM" in result.stdout and "readme.txt" in result.stdout
    assert len(stored_files(pub_settings.storage.root)) == 3


def test_the_command_warns_about_files_outside_the_root(pub_settings: Settings, samples: list[Sample], tmp_path: Path) -> None:
    result = cli(pub_settings, str(samples[0].path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "outside the storage root" in result.stdout and "--copy-into-storage" in result.stdout


def test_kafka_down_fails_every_file_and_the_exit_code_says_so(
    settings: Settings, samples: list[Sample], tmp_path: Path
) -> None:
    dead = dataclasses.replace(settings, kafka=KafkaSettings(brokers=f"127.0.0.1:{free_port()}", message_timeout_ms=1500))
    result = cli(dead, str(samples[0].path), str(samples[1].path), "--copy-into-storage", cwd=tmp_path)
    assert result.returncode == 1
    assert "failed    │ 2" in result.stdout
    assert "Kafka did not acknowledge" in result.stdout
