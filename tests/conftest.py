"""Shared fixtures: sample DICOM files shipped inside pydicom."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

PYDICOM_DATA = Path(pydicom.__file__).parent / "data"


def sample_files(folder: str = "test_files") -> list[Path]:
    """Every file in pydicom's bundled data folder (globbed: never downloads)."""
    return sorted(p for p in (PYDICOM_DATA / folder).rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def pydicom_test_files() -> list[Path]:
    return sample_files("test_files")


@pytest.fixture(scope="session")
def pydicom_charset_files() -> list[Path]:
    return sample_files("charset_files")
