"""Parsing of DICOM value representations: DA, TM, DS, IS and multi-valued strings.

Pure functions on already decoded text (padding may still be there). Each
returns ``None`` for an empty value and raises :class:`ValueError` with a short
reason for a value that does not follow its VR; the caller decides what to do
with that (the record builder logs a warning and stores null, so one bad
attribute never costs the instance).

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
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Final

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


__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "PADDING",
    "join_values",
    "parse_date",
    "parse_decimal",
    "parse_integer",
    "parse_time",
    "split_values",
]
