"""The one element walker: top-level elements of a data set, from a file or from bytes in memory.

Why: pydicom builds a full :class:`~pydicom.dataset.Dataset` (an object per
element, tag dictionary look-ups, sequence parsing) even with
``stop_before_pixels``, which costs about a millisecond on a CT header. This
walker jumps from element header to element header with precompiled
:mod:`struct` formats, keeps only the bytes of the wanted attributes, skips
everything else by its length (sequences and items of defined or undefined
length included) and stops at the first Pixel Data tag: a few hundred
nanoseconds per element. The consumer runs it over stored files (``pread``
into a small window: skipped values are never read), the receiver over the
data set of a C-STORE, the folder publisher over a memory-mapped file.

It handles the common case and nothing else: Part 10 files (128-byte
preamble and ``DICM``, file meta in explicit VR little endian) or a bare data
set in a known transfer syntax, encoded in implicit VR little endian,
explicit VR little endian (every encapsulated syntax included) or explicit
VR big endian. Anything unusual raises :class:`~dicomflow.dicom.exceptions.Unsupported`
and :mod:`dicomflow.dicom.reader` hands the bytes to pydicom
(:mod:`dicomflow.dicom.general`): no preamble, deflated data sets, a meta
that lies about the encoding, unknown VRs.

What it does check, because the pipeline must not index a broken file: every
defined length must fit in the data (including the Pixel Data element's,
whose header is read but whose value never is); data that ends inside an
element is :class:`~dicomflow.dicom.exceptions.TruncatedError`, naming the
element and the byte offsets.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from dicomflow.dicom.constants import (
    LONG_VRS,
    PIXEL_TAGS,
    PREFIX,
    SHORT_VRS,
    UNDEFINED_LENGTH,
    VR_NAMES,
    WANTED,
    transfer_syntax,
)
from dicomflow.dicom.exceptions import TruncatedError, Unsupported
from dicomflow.dicom.part10 import META_START, Buffer, read_file_meta
from dicomflow.dicom.sequences import skip_sequence
from dicomflow.dicom.window import HEAD_BE, HEAD_LE, IMPL_BE, IMPL_LE, U32_BE, U32_LE, Window

#: A file meta group larger than this is not a real one.
_MAX_META: Final = 1 << 24

#: wanted set → wanted | PIXEL_TAGS: one set look-up decides whether an element needs more than skipping.
_interesting: dict[frozenset[int], frozenset[int]] = {WANTED: WANTED | PIXEL_TAGS}


@dataclass(slots=True)
class RawHeader:
    """The undecoded header of one file or data set, as the walker (or pydicom) found it.

    ``elements`` maps a wanted tag to ``(vr, value)``: the VR as written
    (``None`` under implicit VR, where the dictionary VR applies) and the raw
    value bytes, padding included. ``transfer_syntax_uid`` is (0002,0010)
    when the file has it, else the one its encoding shows. ``file_size`` is
    the size of the file (or buffer) read.
    """

    transfer_syntax_uid: str
    little_endian: bool
    file_size: int
    elements: dict[int, tuple[str | None, bytes]] = field(default_factory=dict)


# --------------------------------------------------------------------------- entry points


def read_file(path: str, wanted: frozenset[int] = WANTED) -> RawHeader:
    """The wanted top-level attributes of the Part 10 file at ``path``.

    Raises:
        Unsupported: the file is outside the walker's scope (use the general reader).
        TruncatedError: the file ends inside an element.
        OSError: the file cannot be opened or read.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read_part10(Window.of_file(fd), wanted)
    finally:
        os.close(fd)


def read_fetched(first: bytes, size: int, fetch: Callable[[int, int], bytes],
                 wanted: frozenset[int] = WANTED) -> RawHeader:
    """:func:`read_file` over an object of ``size`` bytes starting with ``first``, the rest by ``fetch(pos, count)``.

    Raises:
        Unsupported, TruncatedError: as :func:`read_file`; whatever ``fetch`` raises.
    """
    return _finish(_read_part10(Window.of_reader(first, size, fetch), wanted), first)


def read_part10(buf: Buffer, wanted: frozenset[int] = WANTED) -> RawHeader:
    """:func:`read_file` over the bytes of a whole Part 10 file in memory (or memory-mapped)."""
    return _finish(_read_part10(Window.of_buffer(buf), wanted), buf)


def read_dataset(
    buf: Buffer, transfer_syntax_uid: str, *, offset: int = 0, wanted: frozenset[int] = WANTED
) -> RawHeader:
    """The wanted top-level attributes of a bare data set encoded in ``transfer_syntax_uid``, from ``offset``.

    Raises:
        Unsupported: a deflated data set, or an encoding the walker does not follow.
        TruncatedError: the data ends inside an element.
    """
    syntax = transfer_syntax(transfer_syntax_uid)
    if syntax.deflated:
        raise Unsupported(f"transfer syntax {transfer_syntax_uid!r}")
    window = Window.of_buffer(buf)
    _check_encoding(window, offset, syntax.implicit)
    header = RawHeader(transfer_syntax_uid, syntax.little, window.size)
    walk(window, offset, syntax.implicit, syntax.little, header.elements, wanted)
    return _finish(header, buf)


def read_dataset_prefix(buf: Buffer, transfer_syntax_uid: str, *, wanted: frozenset[int] = WANTED) -> RawHeader | None:
    """:func:`read_dataset` over the first bytes of a data set still arriving; None until they hold the header.

    The prefix holds the header once the walk meets an element past the
    last wanted tag (usually Pixel Data, whose value runs on past the
    prefix); an element cut off before that means more bytes are needed.
    Nothing is judged about the rest: the whole data set gets its verdict
    once it is complete.

    Raises:
        Unsupported: a deflated data set, or an encoding the walker does not follow.
    """
    syntax = transfer_syntax(transfer_syntax_uid)
    if syntax.deflated:
        raise Unsupported(f"transfer syntax {transfer_syntax_uid!r}")
    window = Window.of_buffer(buf)
    if window.size < 12:
        return None
    _check_encoding(window, 0, syntax.implicit)
    header = RawHeader(transfer_syntax_uid, syntax.little, window.size)
    try:
        stop = walk(window, 0, syntax.implicit, syntax.little, header.elements, wanted)
    except TruncatedError as cut:
        if cut.tag is None or cut.tag <= max(wanted):
            return None
    else:
        if stop >= window.size:  # every element of the prefix read, none past the header yet
            return None
    return _finish(header, buf)


def read_elements(buf: Buffer, wanted: frozenset[int], *, implicit: bool = True, little: bool = True) -> RawHeader:
    """The wanted elements of a short encoded group taken as it is (a DIMSE command set: implicit VR LE).

    No transfer-syntax checks: the caller knows the encoding.

    Raises:
        TruncatedError: an element runs past the end of ``buf``.
        Unsupported: an encoding the walker does not follow.
    """
    header = RawHeader("", little, len(buf))
    walk(Window.of_buffer(buf), 0, implicit, little, header.elements, wanted)
    return _finish(header, buf)


def _finish(header: RawHeader, buf: Buffer) -> RawHeader:
    """Values sliced from a memoryview or bytearray are views: make them bytes."""
    if not isinstance(buf, (bytes, mmap.mmap)):
        header.elements = {tag: (vr, bytes(value)) for tag, (vr, value) in header.elements.items()}
    return header


def _read_part10(f: Window, wanted: frozenset[int]) -> RawHeader:
    pos, uid = _read_meta(f)
    syntax = transfer_syntax(uid)
    if syntax.deflated:
        raise Unsupported(f"transfer syntax {uid!r}")
    _check_encoding(f, pos, syntax.implicit)
    header = RawHeader(uid, syntax.little, f.size)
    walk(f, pos, syntax.implicit, syntax.little, header.elements, wanted)
    return header


def _read_meta(f: Window) -> tuple[int, str]:
    """Check the preamble and read the file meta group; return (data set start, transfer syntax)."""
    if f.size < META_START or f.at(0, META_START) != 0 or f.data[META_START - 4:META_START] != PREFIX:
        raise Unsupported("no 128-byte preamble and DICM prefix")
    limit = len(f.data)
    while True:
        try:
            meta, pos = read_file_meta(f.data, META_START)
        except TruncatedError:
            if limit >= f.size:
                raise
        except ValueError as why:
            raise Unsupported(str(why)) from why
        else:
            if pos + 8 <= limit or limit >= f.size:
                return pos, meta.transfer_syntax_uid
        # The meta group may go on past the window: read more of the file from its start.
        limit = min(f.size, limit * 8)
        if limit > _MAX_META or f.fd is None:
            raise Unsupported("file meta information too large")
        f.data, f.base = os.pread(f.fd, limit, 0), 0


def _check_encoding(f: Window, pos: int, implicit: bool) -> None:
    """Make sure the data set is encoded as the transfer syntax says (writers do lie)."""
    if pos + 6 > f.size:
        return
    i = f.at(pos, 6)
    a, b = f.data[i + 4], f.data[i + 5]
    looks_explicit = 0x40 < a < 0x5B and 0x40 < b < 0x5B
    if looks_explicit == implicit:
        raise Unsupported("data set encoding differs from the transfer syntax")


def walk(f: Window, pos: int, implicit: bool, little: bool, found: dict[int, tuple[str | None, bytes]],
         wanted: frozenset[int] = WANTED) -> int:
    """Walk the top-level elements from ``pos`` to the pixel data or the end, keeping the wanted ones;
    return the offset where the walk stopped (the pixel data element's, or the end).

    The hot loop of the package: a CT header has a few hundred elements, most of them skipped, so
    everything it touches is a local and the common element costs one unpack, two set look-ups and a
    comparison; only the pixel data, an undefined-length sequence and a value beyond the window cost a
    call. Elements are not required to be in tag order: like pydicom, the last of duplicated tags wins
    and the first pixel data tag ends the walk.

    Raises:
        TruncatedError: the data ends inside an element (offsets in the message).
        Unsupported: an encoding the walker does not follow.
    """
    interesting, unpack_head, unpack_u32 = _walk_plan(wanted, implicit, little)
    long_vrs, short_vrs, vr_names, pixel_tags = LONG_VRS, SHORT_VRS, VR_NAMES, PIXEL_TAGS
    size, data, base, vr_bytes = f.size, f.data, f.base, b""
    end_of_data = len(data)
    while pos + 8 <= size:
        i = pos - base
        if i < 0 or i + 12 > end_of_data:
            i = f.at(pos, min(12, size - pos))
            data, base, end_of_data = f.data, f.base, len(f.data)
        if implicit:
            group, element, length = unpack_head(data, i)
            start = pos + 8
        else:
            group, element, vr_bytes, length = unpack_head(data, i)
            if vr_bytes in long_vrs:
                if i + 12 > end_of_data:
                    raise TruncatedError(f"file ends inside the element header at byte {pos}", tag=group << 16 | element)
                length = unpack_u32(data, i + 8)[0]
                start = pos + 12
            elif vr_bytes in short_vrs:
                start = pos + 8
            else:
                raise Unsupported(f"unknown VR {vr_bytes!r} at byte {pos}")
        tag = group << 16 | element
        if tag in interesting:
            if tag in pixel_tags:
                _check_pixel_length(tag, length, start, size)
                return pos
            j = start - base
            if j < 0 or j + length > end_of_data:  # also for an undefined or too long length
                j = _window_for_value(f, tag, length, start)
                data, base, end_of_data = f.data, f.base, len(f.data)
            found[tag] = (None if implicit else vr_names[vr_bytes], data[j : j + length])  # type: ignore[assignment]
            pos = start + length
        elif length == UNDEFINED_LENGTH:
            pos = _skip_undefined(f, start, implicit, little, vr_bytes, pos)
            data, base, end_of_data = f.data, f.base, len(f.data)
        else:
            pos = start + length
            if pos > size:
                raise TruncatedError(_past_end(group, element, length, start, size), tag=tag)
    if pos < size:
        raise TruncatedError(f"file ends inside the element header at byte {pos}")
    return pos


def _walk_plan(wanted: frozenset[int], implicit: bool, little: bool) -> tuple[frozenset[int], Any, Any]:
    """What :func:`walk` looks up once per walk: the tags worth stopping at and the header formats."""
    interesting = _interesting.get(wanted)
    if interesting is None:
        interesting = _interesting.setdefault(wanted, wanted | PIXEL_TAGS)
    if implicit:
        head = IMPL_LE if little else IMPL_BE
    else:
        head = HEAD_LE if little else HEAD_BE
    return interesting, head.unpack_from, (U32_LE if little else U32_BE).unpack_from


def _check_pixel_length(tag: int, length: int, start: int, size: int) -> None:
    """The pixel data's value is never read, but its defined length must fit in the data."""
    if length != UNDEFINED_LENGTH and start + length > size:
        raise TruncatedError(f"Pixel Data needs {length} bytes at byte {start}; the file has {size - start}", tag=tag)


def _window_for_value(f: Window, tag: int, length: int, start: int) -> int:
    """Make a wanted element's value available in the window; return its index in ``f.data``.

    Raises:
        Unsupported: the element has an undefined length.
        TruncatedError: the value runs past the end of the data.
    """
    if length == UNDEFINED_LENGTH:
        raise Unsupported(f"wanted element {tag:08X} has undefined length")
    if start + length > f.size:
        raise TruncatedError(_past_end(tag >> 16, tag & 0xFFFF, length, start, f.size), tag=tag)
    return f.at(start, length)


def _skip_undefined(f: Window, start: int, implicit: bool, little: bool, vr_bytes: bytes, pos: int) -> int:
    """Skip a top-level element of undefined length (a sequence); return the offset after its delimiter."""
    if implicit or vr_bytes == b"SQ":
        return skip_sequence(f, start, implicit, little, 1)
    if vr_bytes == b"UN":  # PS3.5 6.2.2: the content is implicit VR little endian
        return skip_sequence(f, start, True, True, 1)
    raise Unsupported(f"undefined length with VR {vr_bytes!r} at byte {pos}")


def _past_end(group: int, element: int, length: int, start: int, size: int) -> str:
    return f"element ({group:04X},{element:04X}) needs {length} bytes at byte {start}; the file has {size - start}"


__all__ = ["RawHeader", "read_dataset", "read_dataset_prefix", "read_elements", "read_file", "read_part10", "walk"]
