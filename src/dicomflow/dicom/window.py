"""A window of bytes over a file or a buffer: what the element walker reads encoded DICOM through.

Over a file the window holds one block (:data:`BLOCK` bytes) and is refilled
by ``pread`` where the walk needs bytes it does not hold, so values the walk
skips are never read; over a buffer (bytes, a memory map) it is the whole
buffer and never moves. Also the :mod:`struct` layouts of element headers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any, Final

from dicomflow.dicom.exceptions import TruncatedError
from dicomflow.dicom.part10 import Buffer

#: Bytes read at a time from a file. Most CT/MR headers fit in the first block.
BLOCK: Final = 8192

HEAD_LE = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length (explicit)
HEAD_BE = struct.Struct(">HH2sH")
IMPL_LE = struct.Struct("<HHI")  # group, element, 32-bit length (implicit; items)
IMPL_BE = struct.Struct(">HHI")
U32_LE = struct.Struct("<I")
U32_BE = struct.Struct(">I")


class Window:
    """A window of bytes over a file (refilled by ``pread`` where the walk needs it) or over a buffer.

    ``data`` holds the bytes from offset ``base``. Skipped values are never
    read: the walk just moves its position past them. Over a buffer the
    window is the whole buffer and never moves.
    """

    __slots__ = ("base", "data", "fd", "fetch", "size")

    def __init__(self, data: Buffer, size: int, fd: int | None,
                 fetch: Callable[[int, int], bytes] | None = None) -> None:
        self.fd = fd
        self.size = size
        self.base = 0
        self.data: Buffer = data
        #: ``fetch(pos, count)``: the bytes at ``pos`` from elsewhere (an object store's ranged read).
        self.fetch = fetch

    @classmethod
    def of_file(cls, fd: int) -> Window:
        return cls(os.pread(fd, BLOCK, 0), os.fstat(fd).st_size, fd)

    @classmethod
    def of_buffer(cls, buf: Buffer) -> Window:
        return cls(buf, len(buf), None)

    @classmethod
    def of_reader(cls, first: bytes, size: int, fetch: Callable[[int, int], bytes]) -> Window:
        """A window over an object of ``size`` bytes whose first bytes are ``first``, refilled by ``fetch``."""
        return cls(first, size, None, fetch)

    def at(self, pos: int, count: int) -> int:
        """Make ``count`` bytes at offset ``pos`` available; return their index in ``data``.

        Raises:
            TruncatedError: the data ends before ``pos + count``.
        """
        index = pos - self.base
        if index >= 0 and index + count <= len(self.data):
            return index
        if pos + count > self.size or (self.fd is None and self.fetch is None):
            raise TruncatedError(f"file ends at byte {self.size}, inside the element at byte {pos}")
        want = max(BLOCK, count)
        self.data = os.pread(self.fd, want, pos) if self.fd is not None else self.fetch(pos, want)  # type: ignore[misc]
        self.base = pos
        if len(self.data) < count:  # the file shrank under us
            raise TruncatedError(f"file ends inside the element at byte {pos}")
        return 0

    def unpack(self, layout: struct.Struct, pos: int) -> tuple[Any, ...]:
        """``layout`` unpacked at offset ``pos`` (refilling first: never from a stale buffer)."""
        i = self.at(pos, layout.size)
        return layout.unpack_from(self.data, i)


__all__ = ["BLOCK", "HEAD_BE", "HEAD_LE", "IMPL_BE", "IMPL_LE", "U32_BE", "U32_LE", "Window"]
