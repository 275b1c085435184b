"""Damaged DICOM files: pydicom's samples with fresh UIDs, truncated or bit-flipped in their header."""

from __future__ import annotations

import io
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def sample_files() -> list[Path]:
    """pydicom's bundled sample files (globbed: pydicom's own helper may download)."""
    import pydicom

    root = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(p for p in root.rglob("*") if p.is_file() and p.stat().st_size <= 600_000)


@dataclass(frozen=True)
class Sample:
    """A sample file pydicom can read and write again, ready to take fresh UIDs."""

    name: str
    dataset: Any


def usable_samples(paths: list[Path]) -> list[Sample]:
    """The samples that have the three UIDs and survive a write with new UIDs."""
    import pydicom

    out: list[Sample] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            try:
                ds = pydicom.dcmread(p)
                if not all(k in ds for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")):
                    continue
                if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
                    continue
                with_uids(ds, "1.2.3", "1.2.4", "1.2.5")
                out.append(Sample(p.name, ds))
            except Exception:  # noqa: BLE001 - a sample pydicom cannot round-trip is simply not used
                continue
    return out


def with_uids(ds: Any, study: str, series: str, sop: str) -> bytes:
    """The sample re-encoded with new UIDs (file meta included).

    Raises:
        Exception: whatever pydicom raises for a data set it cannot write.
    """
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


def _header_end(data: bytes) -> int:
    """Where the pixel data element starts (the damage goes before it), or the file's end."""
    for tag in (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10"):
        pos = data.find(tag, 132)
        if pos > 0:
            return pos
    return len(data)


def damage(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Truncate, bit-flip, or both, inside the header (where it matters to the parser)."""
    end = max(_header_end(data), 140)
    how = rng.choice(("truncated", "bit-flipped", "bit-flipped", "truncated+bit-flipped"))
    out = bytearray(data)
    if "bit-flipped" in how:
        for _ in range(rng.randint(1, 16)):
            pos = rng.randrange(128, min(end, len(out)))
            out[pos] ^= 1 << rng.randrange(8)
    if "truncated" in how:
        del out[rng.randint(0, min(end + 64, len(out) - 1)):]
    return how, bytes(out)


def without_sop_uid(path: Path) -> bytes:
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    return buf.getvalue()


__all__ = ["Sample", "damage", "sample_files", "usable_samples", "with_uids", "without_sop_uid"]
