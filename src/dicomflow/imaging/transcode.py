"""Transcoding: an instance re-encoded in another transfer syntax (shared by ``web/`` and ``images/``).

Transcoding uses pydicom's pixel data backends rather than GDCM or dcmtk
subprocesses: pydicom already parses every instance here, and its decoder /
encoder plugins are maintained, pip-installable wheels with no system
libraries:

* decoding: pylibjpeg-libjpeg (JPEG baseline / extended / lossless),
  pylibjpeg-openjpeg (JPEG 2000), pyjpegls (JPEG-LS), pydicom's own RLE and
  deflate;
* encoding (lossless targets only, so a transcode never loses information):
  Explicit / Implicit VR Little Endian and Deflated (pydicom's writer), RLE
  Lossless (pydicom), JPEG-LS Lossless (pyjpegls), JPEG 2000 Lossless
  (pylibjpeg-openjpeg).

A decoded colour image leaves as RGB (pydicom converts YBR, and sets
PhotometricInterpretation accordingly), matching what pydicom gives for the
original. Lossy targets are not written here: creating a lossy copy is a policy
decision (PS3.5 §8.2 Lossy Image Compression attributes), not a negotiation.

Transcoding holds one instance in memory at a time (never a study).

Every function takes a :data:`Source`: a local path, the bytes of a Part 10
file, or a seekable binary file (what the storage layer gives on either
backend, :mod:`dicomflow.blobs`), so no caller needs a local file.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicomflow.dicom.constants import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    JPEG_EXTENDED,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    NATIVE_SYNTAXES,
    RLE_LOSSLESS,
)
from dicomflow.errors import DicomflowError

#: Syntaxes this server can write an instance in, from any syntax it can decode.
WRITABLE: tuple[str, ...] = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, RLE_LOSSLESS, JPEG_LS_LOSSLESS,
                             JPEG_2000_LOSSLESS)

#: Media type of a compressed frame / rendered part, by transfer syntax (PS3.18 Table 8.7.3-2).
FRAME_MEDIA: dict[str, str] = {
    JPEG_BASELINE: "image/jpeg", JPEG_EXTENDED: "image/jpeg", JPEG_LOSSLESS: "image/jpeg", JPEG_LOSSLESS_SV1: "image/jpeg",
    JPEG_LS_LOSSLESS: "image/jls", JPEG_LS_NEAR_LOSSLESS: "image/jls",
    JPEG_2000_LOSSLESS: "image/jp2", JPEG_2000: "image/jp2",
    RLE_LOSSLESS: "image/x-dicom-rle",
}


#: An instance to read: a path, its bytes, or a seekable binary file positioned at its start.
Source = Path | str | bytes | bytearray | memoryview | BinaryIO


def as_readable(source: Source) -> Path | str | BinaryIO:
    """What pydicom reads: bytes wrapped in a file, anything else as it is."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return io.BytesIO(source)
    return source


class TranscodeError(DicomflowError):
    """The pixel data of an instance could not be decoded or encoded."""

    poison = True


def decodable(ts: str) -> bool:
    """True when this server can decode pixel data of syntax ``ts``."""
    if ts in NATIVE_SYNTAXES:
        return True
    try:
        from pydicom.pixels.decoders.base import get_decoder

        return bool(get_decoder(UID(ts)).is_available)
    except (NotImplementedError, ValueError):
        return False


def read(source: Source, *, stop_before_pixels: bool = False) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(as_readable(source), stop_before_pixels=stop_before_pixels)


def transcode(source: Source, target: str) -> bytes:
    """The instance ``source`` as a Part 10 file in transfer syntax ``target``.

    Raises:
        TranscodeError: the pixel data cannot be decoded or encoded (the reason says which).
    """
    ds = read(source)
    try:
        return encode_dataset(ds, target)
    except TranscodeError:
        raise
    except Exception as exc:
        raise TranscodeError(f"{type(exc).__name__}: {exc}") from exc


def encode_dataset(ds: Dataset, target: str) -> bytes:
    """Re-encode a full dataset in ``target`` (see :func:`transcode`)."""
    source = str(ds.file_meta.TransferSyntaxUID)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if "PixelData" in ds and UID(source).is_compressed:
            ds.decompress(generate_instance_uid=False)  # same instance, other encoding
        if target in NATIVE_SYNTAXES:
            ds.file_meta.TransferSyntaxUID = UID(target)
        elif "PixelData" in ds:
            ds.compress(UID(target), generate_instance_uid=False)  # lossless targets only
        else:
            ds.file_meta.TransferSyntaxUID = UID(target)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


__all__ = [
    "FRAME_MEDIA",
    "WRITABLE",
    "Source",
    "TranscodeError",
    "as_readable",
    "decodable",
    "encode_dataset",
    "read",
    "transcode",
]
