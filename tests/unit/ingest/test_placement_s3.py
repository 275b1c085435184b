"""The S3 backend's keys and locations as the ingest core builds them (no request is sent: pure logic)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from dicomflow.dicom.derived import InstanceHeader
from dicomflow.ingest.exceptions import StorageWriteError
from dicomflow.ingest.ingestor import Identity, Ingestor
from dicomflow.ingest.placement_s3 import SPOOL_FOLDER, S3Writer, marker_key
from dicomflow.settings import IngestSettings, StorageS3Settings, StorageSettings

STUDY, SERIES, SOP = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.2", "1.2.826.0.1.3680043.8.498.1.2.3"


def identity() -> Identity:
    header = InstanceHeader.__new__(InstanceHeader)
    object.__setattr__(header, "study_date", dt.date(2024, 3, 5))
    return Identity("t1", STUDY, SERIES, SOP, "1.2.840.10008.5.1.4.1.1.2", header)


def s3_ingestor(tmp_path: Path, prefix: str = "archive/") -> Ingestor:
    s3 = StorageS3Settings(endpoint="http://127.0.0.1:9", bucket="pacs", prefix=prefix, access_key_id="k",
                           secret_access_key="s", path_style=True)
    storage = StorageSettings(root=tmp_path / "root", backend="s3", s3=s3, spool=tmp_path / "spool")
    return Ingestor(storage, IngestSettings(), "node-1")


def test_keys_are_the_filesystem_layout_and_locations_name_the_bucket(tmp_path: Path) -> None:
    ingestor = s3_ingestor(tmp_path)
    try:
        key = f"t1/20240305/{STUDY}/{SERIES}/{SOP}.dcm"
        assert ingestor.key_of(identity()) == key
        assert ingestor.location_of(identity()) == f"s3://pacs/archive/{key}"
        assert isinstance(ingestor.s3, S3Writer)
        assert ingestor.local_root == (tmp_path / "spool").resolve()
    finally:
        ingestor.close()
    files = Ingestor(StorageSettings(root=tmp_path / "root"), IngestSettings(), "node-1")
    assert files.s3 is None and files.local_root == (tmp_path / "root").resolve()
    assert files.location_of(identity()) == str((tmp_path / "root").resolve() / key)


def test_a_location_past_512_bytes_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    ingestor = s3_ingestor(tmp_path, prefix="p" * 420 + "/")
    try:
        with pytest.raises(StorageWriteError, match=r"storage\.s3\.prefix"):
            ingestor.key_of(identity())
    finally:
        ingestor.close()


def test_the_marker_is_hidden_beside_its_object() -> None:
    assert marker_key("t1/20240305/1.2/1.2.3/1.2.3.4.dcm") == "t1/20240305/1.2/1.2.3/.1.2.3.4.dcm.unacknowledged"
    assert marker_key("x.dcm") == ".x.dcm.unacknowledged"
    assert SPOOL_FOLDER == ".incoming"  # the receiver's clear_incoming clears a dead process's spool files
