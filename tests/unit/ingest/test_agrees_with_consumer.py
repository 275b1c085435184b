"""One rule at both ends: what ingest accepts the consumer indexes, and both derive the same values.

For every bundled sample file (pydicom's ``test_files`` and ``charset_files``)
the two ways in (the receiver's steps on the data set of a C-STORE, and the
folder publisher with ``--copy-into-storage``) are run for real, writing
under a temporary storage root; the consumer's extraction then runs on the
file that was written, with the store event's tenant and receipt time, as
the consumer's workers do. No Kafka here: the store event is the one the
ingest code built, byte for byte what it would publish.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import cast

import pytest

from dicomflow.dicom import derived, reader
from dicomflow.dicom.part10 import file_header, read_file_meta
from dicomflow.dicom.values import Values
from dicomflow.errors import ExtractError
from dicomflow.extract import extract_file
from dicomflow.ingest.exceptions import InvalidUIDError, MalformedDatasetError, MissingAttributeError
from dicomflow.ingest.ingestor import Ingestor, Source
from dicomflow.kafka.producer import Publisher
from dicomflow.models import DicomStoreMeta
from dicomflow.scanner.publish import FolderPublisher, Prepared
from dicomflow.settings import IngestSettings, Settings, StorageSettings
from tests.conftest import PYDICOM_DATA, sample_files

ALL_SAMPLES = sample_files("test_files") + sample_files("charset_files")


def _part10(path: Path) -> bool:
    """A Part 10 file with a usable meta group: what a C-STORE's data set and transfer syntax can come from."""
    data = path.read_bytes()
    try:
        return data[128:132] == b"DICM" and read_file_meta(data, 132) is not None
    except ValueError:
        return False


PART10_SAMPLES = [p for p in ALL_SAMPLES if _part10(p)]
SOURCE = Source(ae_title="MODALITY", address="10.0.0.7")
_IDS = {"ids": lambda p: str(p.relative_to(PYDICOM_DATA))}


@pytest.fixture(autouse=True)
def _quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # odd sample files log warnings by design


def assert_agree(event: DicomStoreMeta) -> None:
    """The consumer's records for the event's file match the event field by field."""
    state, image = extract_file(event.file_path, event.tenant_id, received=event.created_time)
    assert (image.tenant_id, state.tenant_id) == (event.tenant_id, event.tenant_id)
    assert (image.patient_id, state.patient_id) == (event.patient_id, event.patient_id)
    assert (image.study_uid, image.series_uid, image.sop_uid) == (event.study_uid, event.series_uid, event.sop_uid)
    assert (image.study_uid_hash, image.series_uid_hash) == (event.study_uid_hash, event.series_uid_hash)
    assert state.study_date == event.study_date
    assert state.accession_number == event.accession_number
    assert image.transfer_syntax_uid == event.transfer_syntax_uid
    assert image.space_size == event.file_size
    # the consumer's records carry no frame count: derive it from what the consumer reads, as ingest does
    raw = reader.read_file(event.file_path)
    assert derived.number_of_frames(Values(raw, event.file_path)) == event.number_of_frames


def _consumer_verdict(data: bytes, tmp_path: Path) -> str | None:
    path = tmp_path / "as-the-consumer-would-read-it.dcm"
    path.write_bytes(data)
    try:
        extract_file(path, "t")
    except ExtractError as exc:
        return exc.reason
    return None


def test_the_samples_hold_part10_files_and_others() -> None:
    assert 150 < len(PART10_SAMPLES) < len(ALL_SAMPLES)  # the others go through the publisher test below


@pytest.mark.parametrize("path", PART10_SAMPLES, **_IDS)  # type: ignore[arg-type]
def test_the_receiver_accepts_exactly_what_the_consumer_indexes_and_both_agree(path: Path, tmp_path: Path) -> None:
    """The receiver's steps on the file's data set, as a C-STORE in the file's transfer syntax would bring it."""
    data = path.read_bytes()
    meta, offset = read_file_meta(data, 132)
    ingestor = Ingestor(StorageSettings(root=tmp_path / "root"), IngestSettings(), "node-1")
    dataset, syntax = data[offset:], meta.transfer_syntax_uid
    try:
        header = ingestor.read(dataset, syntax)
        identity = ingestor.identify(header, sop_class_uid=meta.media_storage_sop_class_uid,
                                     sop_instance_uid=meta.media_storage_sop_instance_uid, calling_ae="MODALITY")
    except (MalformedDatasetError, MissingAttributeError, InvalidUIDError) as refused:
        # refused to the sender: the consumer would not have indexed the file either
        written = file_header("1.2.3", "1.2.3", syntax, "MODALITY") + dataset
        assert _consumer_verdict(written, tmp_path) is not None, f"refused ({refused}) but the consumer indexes it"
        return
    written_path, size = ingestor.write(identity, dataset, syntax, SOURCE)
    assert_agree(ingestor.store_event(identity, written_path, size, syntax, SOURCE))


def test_every_sample_file_is_either_published_and_indexable_or_skipped_with_its_reason(tmp_path: Path) -> None:
    settings = Settings()
    # some samples share their UIDs with other content: with "replace" each later copy is prepared too
    settings = replace(settings, storage=replace(settings.storage, root=tmp_path / "root"),
                       ingest=replace(settings.ingest, duplicates="replace"))
    folder = FolderPublisher(settings, cast(Publisher, None), copy_into_storage=True)  # prepare() never publishes
    published: list[Prepared] = []
    skipped: dict[Path, str] = {}
    for path in ALL_SAMPLES:
        outcome = folder.prepare(path)
        if isinstance(outcome, Prepared):
            published.append(outcome)
            # checked at once: some samples share their UIDs, so a later copy replaces this one
            assert_agree(outcome.event)
        else:
            assert not outcome.failed, f"{path}: {outcome.reason}"
            assert outcome.reason, path
            if outcome.reason.startswith("already stored with identical content"):
                continue  # the same instance twice in the samples: published once, no verdict to compare
            skipped[path] = outcome.reason
    for path, reason in skipped.items():  # the consumer would refuse each skipped file for a reason too
        assert reason.startswith(("not DICOM", "truncated file", "not a DICOM file", "not a readable DICOM file",
                                  "required attribute", "invalid ", "unusable file meta", "Study Instance UID",
                                  "Series Instance UID", "SOP Instance UID", "SOP Class UID")), (path, reason)
    # pydicom's sample folders hold both: files that index, and broken files that must not get in
    assert len(published) > 100 and any(r.startswith("truncated file") for r in skipped.values())
