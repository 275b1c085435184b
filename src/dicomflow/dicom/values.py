"""The one value decoder: raw element bytes → text, dates, times and numbers.

Pure parsers on already decoded text (:func:`parse_date`, :func:`parse_time`,
:func:`parse_decimal`, :func:`parse_integer`) and :class:`Values`, which
decodes the raw attributes of one header (walker or pydicom, the same
:class:`~dicomflow.dicom.walker.RawHeader`). Each parser returns ``None``
for an empty value and raises :class:`ValueError` with a short reason for a
value that does not follow its VR; :class:`Values` logs a warning (path and
tag, never a patient attribute's value) and returns ``None``, so one bad
attribute never costs the instance.

Accepted forms, stricter than Python's own parsers on purpose (``float()``
takes ``"nan"``, ``"1_000"`` and ``"infinity"``, none of which is a DICOM
number, and JSON has no NaN):

* DA: ``YYYYMMDD``; the ACR-NEMA legacy form ``YYYY.MM.DD``.
* TM: ``HH``, ``HHMM``, ``HHMMSS``, ``HHMMSS.F`` to ``HHMMSS.FFFFFF``; the
  legacy ``HH:MM[:SS[.F...]]``. Digits past the sixth fractional one are cut
  (microsecond precision). A leap second (``SS`` = 60) becomes 59.999999,
  since a wall-clock ``time`` has no 60th second.
* DS: ``[+-]digits[.digits][e[+-]digits]`` (or ``.digits``), finite.
* IS: ``[+-]digits`` within a signed 32-bit integer (the database column);
  a decimal with no fractional part (``"3.0"``, a common writer bug) is read
  as the integer it denotes.
* US/SS/UL/SL in the file's byte order, tolerating the VRs writers get wrong.

Text of the VRs the Specific Character Set applies to (PN, LO, SH ...) is
decoded with it: single-byte ISO 8859 parts, UTF-8, GB18030/GBK, and ISO 2022
code extensions with escape sequences (Japanese, Korean, Chinese). Every
other string VR (CS, AS, DS, IS, DA, TM, UI) is the default repertoire.
Padding is dropped (leading/trailing spaces, trailing NULs); an empty value
is null. Person names lose trailing empty components.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import struct
import warnings
from collections.abc import Callable
from typing import Final, TypeVar

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.valuerep import TEXT_VR_DELIMS

from dicomflow.dicom.constants import SPECIFIC_CHARACTER_SET, tag_name
from dicomflow.dicom.exceptions import UnreadableDicom
from dicomflow.dicom.walker import RawHeader

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: Characters a DICOM value may be padded with: trailing space (text VRs),
#: trailing NUL (UI), and leading spaces, insignificant in most VRs.
PADDING: Final = " \x00"

_TM = re.compile(r"(\d\d)(?:(\d\d)(?:(\d\d)(?:\.(\d*))?)?)?")
_TM_LEGACY = re.compile(r"(\d\d):(\d\d)(?::(\d\d)(?:\.(\d*))?)?")
_DS = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_IS = re.compile(r"[+-]?\d+")

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


def split_values(text: str) -> list[str]:
    """The values of a multi-valued string, each stripped of its padding."""
    return [v.strip(PADDING) for v in text.split("\\")]


def join_values(text: str) -> str | None:
    """A multi-valued string as DICOM encodes it: values joined with a backslash.

    Each value loses its padding (``"-125.0\\\\ 12.5 "`` → ``"-125.0\\\\12.5"``);
    ``None`` when nothing is left.
    """
    if "\\" not in text:
        return text.strip(PADDING) or None
    joined = "\\".join(split_values(text))
    return joined if joined.strip("\\") else None


def parse_date(text: str) -> dt.date | None:
    """A DA value as a date; ``None`` when empty.

    Raises:
        ValueError: not ``YYYYMMDD`` nor ``YYYY.MM.DD``, or not a calendar date
            (``20230230``, ``00000000``).
    """
    text = text.strip(PADDING)
    if not text:
        return None
    if len(text) == 8 and text.isdigit() and text.isascii():
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    if len(text) == 10 and text[4] == "." and text[7] == ".":
        digits = text[:4] + text[5:7] + text[8:]
        if digits.isdigit() and digits.isascii():
            return dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    raise ValueError("not a DICOM date (YYYYMMDD)")


def parse_time(text: str) -> dt.time | None:
    """A TM value as a time of day; ``None`` when empty.

    Raises:
        ValueError: not one of the TM forms, or out of range (``2500``).
    """
    text = text.strip(PADDING)
    if not text:
        return None
    if len(text) == 6 and text.isdigit() and text.isascii():
        hour, minute, second, fraction = text[:2], text[2:4], text[4:], None
    else:
        match = _TM.fullmatch(text) or _TM_LEGACY.fullmatch(text)
        if match is None or not text.isascii():
            raise ValueError("not a DICOM time (HHMMSS.FFFFFF)")
        hour, minute, second, fraction = match.groups()
    micro = int(fraction[:6].ljust(6, "0")) if fraction else 0
    sec = int(second) if second else 0
    if sec == 60:  # leap second: the last instant of the previous one
        sec, micro = 59, 999999
    return dt.time(int(hour), int(minute) if minute else 0, sec, micro)


def parse_decimal(text: str) -> float | None:
    """A DS value as a float; ``None`` when empty.

    Raises:
        ValueError: not a decimal string, or not finite once parsed (``1e999``).
    """
    text = text.strip(PADDING)
    if not text:
        return None
    if not (_DS.fullmatch(text) and text.isascii()):
        raise ValueError("not a DICOM decimal string")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("decimal string out of range")
    return value


def parse_integer(text: str) -> int | None:
    """An IS value as an int; ``None`` when empty.

    Raises:
        ValueError: not an integer string, a decimal with a fractional part,
            or outside the signed 32-bit range.
    """
    text = text.strip(PADDING)
    if not text:
        return None
    if _IS.fullmatch(text) and text.isascii():
        value = int(text)
    else:
        number = parse_decimal(text)  # raises for non-numbers
        if number is None or not number.is_integer():
            raise ValueError("not a DICOM integer string")
        value = int(number)
    if not INT32_MIN <= value <= INT32_MAX:
        raise ValueError("integer string out of the 32-bit range")
    return value


#: Python codec of the default repertoire (what pydicom calls ``iso8859``):
#: never fails, so odd bytes in a CS value cannot stop an extraction.
DEFAULT_CODEC = "latin-1"
_DEFAULT_ENCODINGS: list[str] = ["iso8859"]

#: Raw (0008,0005) value → Python codecs; a handful of distinct values exist
#: in any archive, and converting one costs a dictionary walk plus warnings.
_encodings_cache: dict[bytes, list[str]] = {}
_ENCODINGS_CACHE_MAX = 256

_U16 = {True: struct.Struct("<H"), False: struct.Struct(">H")}
_S16 = {True: struct.Struct("<h"), False: struct.Struct(">h")}
_U32 = {True: struct.Struct("<I"), False: struct.Struct(">I")}
_S32 = {True: struct.Struct("<i"), False: struct.Struct(">i")}
#: VRs a US attribute may turn up with and still hold a 16-bit unsigned value:
#: the right one, UN (explicit VR file, unknown to the writer), OB/OW (sloppy).
_AS_US = frozenset({"US", "UN", "OB", "OW"})
_TEXT_NUMBERS = frozenset({"IS", "DS", "CS", "SH", "LO"})


def encodings_for(raw: bytes | None) -> list[str]:
    """The Python codecs for a raw Specific Character Set value (cached).

    An unknown or misspelled term is handled by pydicom's rules (corrected
    where the intent is clear, else the default repertoire); its warnings are
    logged here instead of being raised as Python warnings.

    Raises:
        UnreadableDicom: a term holds a NUL (``codecs.lookup`` refuses it, and
            pydicom cannot read the file at all: no WADO-RS could serve it).
    """
    if not raw:
        return _DEFAULT_ENCODINGS
    cached = _encodings_cache.get(raw)
    if cached is not None:
        return cached
    given = raw.decode(DEFAULT_CODEC).split("\\")
    if any("\x00" in v.rstrip(PADDING) for v in given):  # pydicom keeps a leading or inner NUL and cannot read on
        raise UnreadableDicom(f"Specific Character Set {given!r} is not a character set: it holds a NUL")
    terms = [v.strip(PADDING) for v in given]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            encodings = convert_encodings(terms if len(terms) > 1 else terms[0])
        except LookupError:  # pydicom configured to raise on invalid values
            encodings = list(_DEFAULT_ENCODINGS)
        except ValueError as exc:  # codecs.lookup: a NUL in a term; pydicom cannot read such a file at all
            raise UnreadableDicom(f"Specific Character Set {terms!r} is not a character set: {exc}") from exc
    for warning in caught:
        _log.warning("Specific Character Set %r: %s", terms, warning.message)
    if len(_encodings_cache) >= _ENCODINGS_CACHE_MAX:
        _encodings_cache.clear()
    _encodings_cache[raw] = encodings
    return encodings


class Values:
    """Decodes the wanted attributes of one file, logging what it has to drop."""

    __slots__ = ("_dates", "elements", "encodings", "little", "path")

    def __init__(self, header: RawHeader, path: str) -> None:
        self.path = path
        self._dates: dict[int, dt.date | None] = {}
        self.elements = header.elements
        self.little = header.little_endian
        charset = self.elements.get(SPECIFIC_CHARACTER_SET)
        self.encodings = encodings_for(charset[1] if charset else None)

    # ---------------------------------------------------------------- reporting

    def invalid(self, tag: int, reason: str, text: object = None) -> None:
        """Log a dropped value: path and tag always; the value unless it is about the patient."""
        if text is not None and tag >> 16 != 0x0010:
            _log.warning("%s: %s %r: %s; stored as null", self.path, tag_name(tag), text, reason)
        else:
            _log.warning("%s: %s: %s; stored as null", self.path, tag_name(tag), reason)

    # ---------------------------------------------------------------- strings

    def default(self, tag: int) -> str | None:
        """A default-repertoire value (CS, AS, DS, IS, DA, TM, UI) as text, padding kept."""
        item = self.elements.get(tag)
        return item[1].decode(DEFAULT_CODEC) if item is not None else None

    def text(self, tag: int) -> str | None:
        """A PN / LO / SH value decoded with the Specific Character Set, stripped."""
        item = self.elements.get(tag)
        if item is None:
            return None
        value = item[1]
        if b"\x1b" not in value:
            try:
                return value.decode(self.encodings[0]).strip(PADDING) or None
            except (UnicodeError, LookupError):
                pass
        return self._decode_slow(tag, value).strip(PADDING) or None

    def _decode_slow(self, tag: int, value: bytes) -> str:
        """ISO 2022 escapes, or bytes the declared charset cannot decode (replaced, logged)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                text = decode_bytes(value, self.encodings, TEXT_VR_DELIMS)
            except (UnicodeError, LookupError):  # pydicom configured to raise
                text = value.decode(DEFAULT_CODEC)
        for warning in caught:
            _log.warning("%s: %s: %s", self.path, tag_name(tag), warning.message)
        return text

    def person_name(self, tag: int) -> str | None:
        """A PN value without trailing empty components (``Doe^John^^^`` → ``Doe^John``)."""
        name = self.text(tag)
        if name is None or not name.endswith(("^", "=", " ")):
            return name
        groups = [g.rstrip("^ ") for g in name.split("=")]
        return "=".join(groups).rstrip("=") or None

    def joined(self, tag: int) -> str | None:
        """A multi-valued default-repertoire string, values joined with a backslash."""
        text = self.default(tag)
        return join_values(text) if text is not None else None

    def single(self, tag: int) -> str | None:
        """A default-repertoire value meant to be single: stripped; the first if several."""
        text = self.default(tag)
        if text is None:
            return None
        if "\\" in text:
            _log.warning("%s: %s has several values; using the first", self.path, tag_name(tag))
            text = text.split("\\", 1)[0]
        return text.strip(PADDING) or None

    # ---------------------------------------------------------------- parsed

    def parsed(self, tag: int, parse: Callable[[str], T | None]) -> T | None:
        """The single value of ``tag`` through ``parse``; null (logged) if it does not parse."""
        text = self.single(tag)
        if text is None:
            return None
        try:
            return parse(text)
        except ValueError as exc:
            self.invalid(tag, str(exc), text)
            return None

    def date(self, tag: int) -> dt.date | None:
        """A DA value (parsed once per tag: the study date rule and the record both ask)."""
        if tag in self._dates:
            return self._dates[tag]
        found = self._dates[tag] = self.parsed(tag, parse_date)
        return found

    def time(self, tag: int) -> dt.time | None:
        return self.parsed(tag, parse_time)

    def decimal(self, tag: int) -> float | None:
        return self.parsed(tag, parse_decimal)

    def integer(self, tag: int) -> int | None:
        return self.parsed(tag, parse_integer)

    def unsigned_short(self, tag: int) -> int | None:
        """A US value (Rows, BitsAllocated ...), in the file's byte order.

        Tolerates the VRs writers get wrong: UN/OB/OW holding the same two
        bytes, SS/UL/SL, and a number written as text.
        """
        item = self.elements.get(tag)
        if item is None:
            return None
        vr, value = item
        size = len(value)
        if size == 0:
            return None
        try:
            if vr is None or vr in _AS_US:
                if size % 2 == 0:
                    number: int = _U16[self.little].unpack_from(value)[0]
                    return number
            elif vr == "SS" and size % 2 == 0:
                number = _S16[self.little].unpack_from(value)[0]
                return number
            elif vr in ("UL", "SL") and size % 4 == 0:
                number = (_U32 if vr == "UL" else _S32)[self.little].unpack_from(value)[0]
                return number
            elif vr in _TEXT_NUMBERS:
                return self.integer(tag)
        except struct.error:  # pragma: no cover - sizes checked above
            pass
        self.invalid(tag, f"{size} bytes with VR {vr} is not an unsigned short")
        return None

    def uid(self, tag: int) -> str | None:
        """A UI value without its padding; ``None`` when absent or empty (validated by :mod:`~dicomflow.dicom.derived`)."""
        text = self.default(tag)
        if text is None:
            return None
        return text.strip(PADDING) or None

    def raw(self, tag: int) -> bytes | None:
        """The value bytes as found, or ``None`` when absent."""
        item = self.elements.get(tag)
        return item[1] if item is not None else None


__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "PADDING",
    "Values",
    "encodings_for",
    "join_values",
    "parse_date",
    "parse_decimal",
    "parse_integer",
    "parse_time",
    "split_values",
]
