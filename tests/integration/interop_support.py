"""Interoperability helpers: a third independent DICOM implementation (GDCM's gdcmscu) and byte comparison."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from dicomflow.dicom.part10 import read_file_meta

GDCMSCU = "/usr/bin/gdcmscu"


def data_set_bytes(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the encoded data set after the File Meta Information) of a Part 10 file."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM", f"{path} is not a Part 10 file"
    meta, offset = read_file_meta(raw, 132)
    return meta.transfer_syntax_uid, raw[offset:]


def assert_data_sets_identical(sent: Path, stored: Path) -> None:
    """The stored file holds the sent data set byte for byte, in the same transfer syntax.

    The receiver writes its own preamble and File Meta Information (its
    implementation UID, the source AE title), so group 0002 may differ; the
    data set may not.
    """
    sent_ts, sent_bytes = data_set_bytes(sent)
    stored_ts, stored_bytes = data_set_bytes(stored)
    assert stored_ts == sent_ts, f"{sent.name}: stored as {stored_ts}, sent as {sent_ts}"
    assert stored_bytes == sent_bytes, f"{sent.name}: the stored data set differs from the one sent"


def assert_same_content(sent: Path, stored: Path) -> None:
    """The stored data set holds the same elements as the sent file (for senders that re-encode, like dcmtk).

    storescu reads each file and writes its data set anew (dropping group
    lengths, changing value padding), so its bytes on the wire differ from the
    file's; the elements may not.
    """
    import warnings

    import pydicom

    def content(path: Path) -> dict[int, object]:
        out: dict[int, object] = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # some samples hold invalid values on purpose
            for elem in pydicom.dcmread(path):
                if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
                    continue  # group lengths and trailing padding: dcmtk drops them
                value = len(elem.value) if elem.VR == "SQ" else elem.value
                out[int(elem.tag)] = value.strip() if isinstance(value, str) else value
        return out

    sent_elements, stored_elements = content(sent), content(stored)
    assert stored_elements.keys() == sent_elements.keys(), sent.name
    for tag, value in sent_elements.items():
        assert stored_elements[tag] == value, f"{sent.name}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) differs"


def gdcmscu_store(port: int, paths: Sequence[Path], *, calling: str = "GDCMSCU",
                  called: str = "DICOMFLOW") -> subprocess.CompletedProcess[str]:
    """GDCM's C-STORE SCU (one association for all files)."""
    args = [GDCMSCU, "--store", "--aetitle", calling, "--call", called]
    for path in paths:
        args += ["-i", str(path)]
    return subprocess.run([*args, "127.0.0.1", str(port)], env={**os.environ, "TCP_NODELAY": "1"},
                          capture_output=True, text=True, timeout=240)


__all__ = ["GDCMSCU", "assert_data_sets_identical", "assert_same_content", "data_set_bytes", "gdcmscu_store"]
