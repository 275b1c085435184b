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
from typing import Protocol

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
    try:  # the consumer's hot path: a plain try, no context manager
        try:
            return walker.read_file(path, wanted)
        except (Unsupported, struct.error) as why:
            _log.debug("%s: general reader (%s)", path, why)
        return general.read_file(path, wanted)
    except Exception as exc:
        judged = verdict(exc)
        if judged is exc:
            raise
        raise judged from exc


#: Bytes of an object's first ranged read: the preamble, the meta group and the header of almost
#: every instance (the walk fetches more only where a header goes on, e.g. a long sequence).
#: Measured (docs/storage.md, "Reading on s3"): 8 KiB holds the whole header of every demo-corpus
#: and bundled-template instance (4 KiB: half of them need a second GET) and of 67 of the 76
#: readable pydicom test files, as many as 16 KiB does; the larger block only fetches more bytes.
HEAD_BYTES = 8 * 1024


class RangedSource(Protocol):
    """What :func:`read_blob` reads through: the storage layer's ``BlobStore`` (this layer does not import it)."""

    def read_head(self, key: str, length: int) -> tuple[bytes, int]: ...
    def read_range(self, key: str, start: int, length: int) -> bytes: ...
    def read(self, key: str) -> bytes: ...
    def location(self, key: str) -> str: ...


def read_blob(store: RangedSource, key: str, wanted: frozenset[int] = WANTED, *,
              fetched: list[int] | None = None, head: tuple[bytes, int] | None = None) -> RawHeader:
    """:func:`read_file` for an object of the storage layer, by ranged reads.

    The walker reads from one ranged GET of :data:`HEAD_BYTES` (which also
    gives the object's size, for the truncation checks) and asks for more
    only where the header goes on; what the walker declines is read whole
    by pydicom. ``fetched`` (if given) gets the size of each read appended.
    ``head``: that first read's answer, fetched already (a chunk's heads are
    fetched concurrently, then parsed).

    Raises:
        UnreadableDicom: as :func:`read_file`.
        Exception: whatever the store raises, unchanged (the storage layer's
            not-found is poison, its unavailable transient).
    """
    sizes = fetched if fetched is not None else []
    failed: list[BaseException] = []

    def fetch(pos: int, length: int) -> bytes:
        try:
            data = store.read_range(key, pos, length)
        except BaseException as exc:
            failed.append(exc)
            raise
        sizes.append(len(data))
        return data

    name = store.location(key)
    first, size = head if head is not None else store.read_head(key, HEAD_BYTES)
    sizes.append(len(first))
    try:
        return walker.read_fetched(first, size, fetch, wanted)
    except (Unsupported, struct.error) as why:
        _log.debug("%s: general reader (%s)", name, why)
    except Exception as exc:
        if failed and exc is failed[-1]:
            raise
        judged = verdict(exc)
        if judged is exc:
            raise
        raise judged from exc
    whole = store.read(key)
    sizes.append(len(whole))
    with _verdict():
        return general.read_bytes(whole, name, wanted)


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


def read_dataset_prefix(
    prefix: Buffer, transfer_syntax_uid: str, *, wanted: frozenset[int] = WANTED, name: str = "data set"
) -> RawHeader | None:
    """The header from the first bytes of a data set still arriving, or None: not yet (or not from a prefix).

    A receiver streams a large data set to disk and needs its identity
    (where the file goes) from the first fragments. None means "keep
    reading": the prefix ends before the header does, or the walker
    declines the encoding (deflated, unusual), in which case the caller
    keeps the data set whole (or spills it) and reads it with
    :func:`read_dataset` at the end. The verdict on the data set is never
    given by its prefix: the complete file is judged with :func:`read_file`.
    """
    try:
        return walker.read_dataset_prefix(prefix, transfer_syntax_uid, wanted=wanted)
    except (Unsupported, struct.error) as why:
        _log.debug("%s: header not read from its prefix (%s)", name, why)
        return None


def verdict(exc: Exception) -> Exception:
    """What a failure to read DICOM means: :class:`UnreadableDicom` with its reason; an I/O error stays itself."""
    if isinstance(exc, UnreadableDicom):
        return exc
    if isinstance(exc, TruncatedError):
        return UnreadableDicom(f"truncated file: {exc}")
    if isinstance(exc, NotDicomError):
        return UnreadableDicom(f"not a DICOM file: {exc}")
    if isinstance(exc, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return UnreadableDicom(f"cannot read the file: {exc.strerror}")
    if isinstance(exc, OSError):
        if exc.errno is None:  # pydicom: "No tag to read at file position ..." is about the bytes
            return UnreadableDicom(f"not a readable DICOM file: {exc}")
        return exc  # the storage failed (EIO, ESTALE ...): transient, the caller retries
    # pydicom's ways of saying "cannot parse this"
    return UnreadableDicom(f"not a readable DICOM file: {type(exc).__name__}: {exc}")


@contextmanager
def _verdict() -> Iterator[None]:
    """:func:`verdict` for a block."""
    try:
        yield
    except Exception as exc:
        judged = verdict(exc)
        if judged is exc:
            raise
        raise judged from exc


__all__ = ["read_dataset", "read_dataset_prefix", "read_file", "read_part10", "verdict"]
