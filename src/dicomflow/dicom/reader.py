"""Reading a header the way the consumer does, wherever the bytes are: the one readability verdict.

The walker (:mod:`~dicomflow.dicom.walker`) reads the files archives hold;
what it declines goes to pydicom (:mod:`~dicomflow.dicom.general`). Either
way the result is a :class:`~dicomflow.dicom.walker.RawHeader`, or an
:class:`~dicomflow.dicom.exceptions.UnreadableDicom` whose reason says why
the bytes cannot be indexed ("truncated file: Pixel Data needs 8192 bytes at
byte 1500; the file has 8130").

The consumer calls :func:`read_file` on a stored file. Ingest calls
:func:`read_dataset` (a C-STORE data set, or a raw data set about to get a
file header) or :func:`read_part10` (a Part 10 file, memory-mapped) on the
bytes it is about to store, so the same decision is made before the file is
accepted: what ingest accepts, the consumer can index.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dicomflow.dicom import general, walker
from dicomflow.dicom.constants import WANTED
from dicomflow.dicom.exceptions import NotDicomError, TruncatedError, UnreadableDicom, Unsupported
from dicomflow.dicom.part10 import Buffer
from dicomflow.dicom.walker import RawHeader

_log = logging.getLogger(__name__)


def read_file(path: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """The wanted attributes of the file at ``path``: the walker, else pydicom.

    Raises:
        UnreadableDicom: not DICOM, truncated, missing, or pydicom cannot parse it.
        OSError: any other I/O failure (storage unreachable: transient).
    """
    with _verdict():
        try:
            return walker.read_file(path, wanted)
        except (Unsupported, struct.error) as why:
            _log.debug("%s: general reader (%s)", path, why)
        return general.read_file(path, wanted)


def read_part10(buf: Buffer, name: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """:func:`read_file` over a whole file's bytes in memory (or memory-mapped); ``name`` for messages.

    Raises:
        UnreadableDicom: as :func:`read_file`.
    """
    with _verdict():
        try:
            return walker.read_part10(buf, wanted)
        except (Unsupported, struct.error) as why:
            _log.debug("%s: general reader (%s)", name, why)
        return general.read_bytes(bytes(buf), name, wanted)


def read_dataset(
    buf: Buffer,
    transfer_syntax_uid: str,
    *,
    offset: int = 0,
    wanted: frozenset[int] = WANTED,
    file_prefix: Callable[[], bytes],
    name: str = "data set",
) -> RawHeader:
    """The verdict on a bare data set (from ``offset``) that will be stored behind ``file_prefix()``.

    ``file_prefix`` returns the preamble and meta group the file will have;
    it is only called when the walker declines the data set and pydicom must
    read the file as the consumer will.

    Raises:
        UnreadableDicom: as :func:`read_file`.
    """
    with _verdict():
        try:
            return walker.read_dataset(buf, transfer_syntax_uid, offset=offset, wanted=wanted)
        except (Unsupported, struct.error) as why:
            _log.debug("%s: general reader (%s)", name, why)
        return general.read_bytes(file_prefix() + bytes(buf[offset:]), name, wanted)


@contextmanager
def _verdict() -> Iterator[None]:
    """Turn every way of failing to read DICOM into :class:`UnreadableDicom`; other I/O errors pass."""
    try:
        yield
    except UnreadableDicom:
        raise
    except TruncatedError as exc:
        raise UnreadableDicom(f"truncated file: {exc}") from exc
    except NotDicomError as exc:
        raise UnreadableDicom(f"not a DICOM file: {exc}") from exc
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise UnreadableDicom(f"cannot read the file: {exc.strerror}") from exc
    except OSError as exc:
        if exc.errno is None:  # pydicom: "No tag to read at file position ..." is about the bytes
            raise UnreadableDicom(f"not a readable DICOM file: {exc}") from exc
        raise
    except Exception as exc:  # pydicom's ways of saying "cannot parse this"
        raise UnreadableDicom(f"not a readable DICOM file: {type(exc).__name__}: {exc}") from exc


__all__ = ["read_dataset", "read_file", "read_part10"]
