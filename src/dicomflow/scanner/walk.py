"""Find DICOM files in folders by their content, not their names.

Archives hold DICOM files named ``IM000001``, ``1.2.3.4``, ``image.DCM`` or
nothing at all, next to DICOMDIRs, reports and thumbnails. A file is DICOM
when its bytes say so:

- a 128-byte preamble followed by ``DICM`` (the PS3.10 file format); or
- a plausible raw data set start, as older writers and some exports produce:
  the first element is in group 0002 (meta without preamble) or 0008,
  encoded explicit VR little endian, explicit VR big endian, or implicit VR
  little endian with a length that fits in the file.

The decision itself is :func:`dicomflow.dicom.part10.sniff` (re-exported
here). Hidden files (``.name``), which include the receiver's temporary
files, are not looked at.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from dicomflow.dicom.part10 import SNIFF_BYTES, Layout, Sniffed, sniff


def iter_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Every file under ``paths`` (files as given, folders recursively, sorted), hidden ones skipped.

    "File" is what is not a folder: a FIFO, socket or device is yielded too,
    and refused by the publisher (which opens it without blocking).

    Symbolic links to files are followed; links to folders are not (no
    cycles). A path that does not exist is yielded as is, so the caller
    reports it.
    """
    for path in paths:
        if path.is_dir():
            for folder, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(folder) / name
        else:
            yield path


__all__ = ["SNIFF_BYTES", "Layout", "Sniffed", "iter_files", "sniff"]
