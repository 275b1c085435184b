"""QIDO-RS matching values (PS3.4 C.2.2.2 as PS3.18 §8.3.4 uses it): the text of one key -> a store match.

What each form means is in :mod:`dicomflow.web.qido`'s docstring; here are
the parsers: wildcards into LIKE patterns (LIKE's own ``%``, ``_`` and ``\\``
escaped), dates, times widened to their unit, and fuzzy name words. They
raise :class:`QueryError` (answered 400 with its message) for a value of the
wrong form.
"""

from __future__ import annotations

import datetime as dt
import re

from dicomflow.errors import DicomflowError
from dicomflow.store.queries import DateRange, NameWords, Text, TimeRange, like_pattern


class QueryError(DicomflowError):
    """A query parameter that cannot be honoured (answered 400 with this message)."""


def text(value: str, *, case_insensitive: bool = False) -> Text | None:
    """A text key: None for the universal match (empty or ``*``), a LIKE pattern with wildcards, else exact."""
    if value in ("", "*"):
        return None  # universal match
    if "*" in value or "?" in value:
        return Text(like_pattern(value), like=True, case_insensitive=case_insensitive)
    if case_insensitive:
        return Text(like_pattern(value), like=False, case_insensitive=True)
    return Text(value)


def _date(given: str, key: str) -> dt.date:
    try:
        return dt.datetime.strptime(given.replace("-", "").replace(".", ""), "%Y%m%d").date()
    except ValueError as exc:
        raise QueryError(f"{key}: {given!r} is not a date YYYYMMDD") from exc


def date_range(value: str, key: str) -> DateRange | None:
    """``A``, ``A-B``, ``A-``, ``-B`` of ``YYYYMMDD`` (``YYYY.MM.DD`` tolerated); None when empty."""
    value = value.strip()
    if not value:
        return None
    if "-" in value:
        start, _, end = value.partition("-")
        if "-" in end:
            raise QueryError(f"{key}: {value!r} is not a date range YYYYMMDD-YYYYMMDD")
        rng = DateRange(_date(start, key) if start else None, _date(end, key) if end else None)
        if rng.start is None and rng.end is None:
            raise QueryError(f"{key}: {value!r} is not a date range")
        return rng
    day = _date(value, key)
    return DateRange(day, day)


def name_words(value: str) -> NameWords | None:
    """``fuzzymatching=true`` on PatientName: the value's words (how they match: :mod:`dicomflow.web.qido`)."""
    words = tuple(w for w in re.split(r"[\s^=,]+", value) if w.strip("*"))
    return NameWords(words) if words else None  # nothing but separators and "*": universal match


_TIME_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")


def _time(given: str, key: str, *, end: bool) -> dt.time:
    """``HH[MM[SS[.F]]]`` (colons tolerated); a range's end is widened to the last moment of its unit."""
    match = _TIME_RE.fullmatch(given.replace(":", ""))
    if match is None or (match[4] is not None and match[3] is None):
        raise QueryError(f"{key}: {given!r} is not a time HHMMSS")
    hh, mm, ss, frac = match.groups()
    top = 59 if end else 0
    micro = int(frac.ljust(6, "9" if end else "0")) if frac else (999999 if end else 0)
    try:
        return dt.time(int(hh), int(mm) if mm else top, int(ss) if ss else top, micro)
    except ValueError as exc:
        raise QueryError(f"{key}: {given!r} is not a time HHMMSS") from exc


def time_range(value: str, key: str) -> TimeRange | None:
    """The same range forms of :func:`_time`'s times; a single time is its whole unit; None when empty."""
    value = value.strip()
    if not value:
        return None
    if "-" in value:
        start, _, end = value.partition("-")
        if "-" in end or not (start or end):
            raise QueryError(f"{key}: {value!r} is not a time range HHMMSS-HHMMSS")
        return TimeRange(_time(start, key, end=False) if start else None, _time(end, key, end=True) if end else None)
    return TimeRange(_time(value, key, end=False), _time(value, key, end=True))


__all__ = ["QueryError", "date_range", "name_words", "text", "time_range"]
