"""The corpus builder writes real DICOM files, byte for byte what pydicom writes, with fresh UIDs."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom

from dicomflow.corpus import make_corpus


def test_files_are_what_pydicom_save_as_writes_and_events_match_them(tmp_path: Path) -> None:
    corpus = make_corpus(tmp_path, 7, studies=2, series_per_study=2, tenant_id="t1")
    assert len(corpus.events) == 7
    assert [s.instances for s in corpus.series] == [2, 2, 2, 1]
    assert len(corpus.studies) == 2
    for event in corpus.events:
        path = Path(event.file_path)
        assert path.is_relative_to(tmp_path / "t1" / event.study_uid / event.series_uid)
        ds = pydicom.dcmread(path)
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == (
            event.study_uid, event.series_uid, event.sop_uid,
        )
        assert ds.file_meta.MediaStorageSOPInstanceUID == event.sop_uid
        assert ds.PatientID == event.patient_id
        assert event.file_size == path.stat().st_size
        again = io.BytesIO()
        ds.save_as(again, enforce_file_format=True)
        assert again.getvalue() == path.read_bytes()


def test_uids_are_fresh_and_instance_numbers_count_up(tmp_path: Path) -> None:
    a = make_corpus(tmp_path / "a", 3)
    b = make_corpus(tmp_path / "b", 3)
    uids = {e.sop_uid for e in a.events + b.events}
    assert len(uids) == 6
    numbers = [pydicom.dcmread(e.file_path).InstanceNumber for e in a.events]
    assert numbers == [1, 2, 3]
