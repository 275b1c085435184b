"""Helpers of the query/retrieve tests: a dcmtk storescp destination, byte comparison of received files."""

from __future__ import annotations

import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pydicom

from dicomflow.dicom.part10 import read_file_meta


def dcmtk_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


@contextmanager
def storescp(folder: Path, port: int, *flags: str, ae_title: str = "STORESCP") -> Iterator[Path]:
    """dcmtk's storescp on 127.0.0.1:``port`` writing into ``folder`` (uncompressed syntaxes only, by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(["/usr/bin/storescp", "-aet", ae_title, "-od", str(folder), *flags, str(port)],
                               env=dcmtk_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _listening(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("storescp did not start")
            time.sleep(0.05)
        yield folder
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def received(folder: Path) -> dict[str, Path]:
    """{SOP Instance UID: file} of the files a dcmtk tool wrote into ``folder``."""
    out: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.is_file():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            out[str(ds.SOPInstanceUID)] = path
    return out


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the bytes after the File Meta Information) of a Part 10 file."""
    data = path.read_bytes()
    meta, start = read_file_meta(data, 132)
    return meta.transfer_syntax_uid, data[start:]
