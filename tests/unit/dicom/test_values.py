"""DA, TM, DS, IS parsing and multi-valued strings: every accepted form, and what is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dicomflow.dicom.values import (
    join_values,
    parse_date,
    parse_decimal,
    parse_integer,
    parse_time,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240229", dt.date(2024, 2, 29)),
        ("19700101 ", dt.date(1970, 1, 1)),  # padded to even length
        ("2001.01.02", dt.date(2001, 1, 2)),  # ACR-NEMA legacy
        ("", None),
        ("  ", None),
    ],
)
def test_date_forms(text: str, expected: dt.date | None) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize(
    "text", ["20230229", "00000000", "2024-01-02", "2024", "202401", "2024013", "２０２４０１０１", "abcdefgh", "2001.1.02"]
)
def test_invalid_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_date(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("153012", dt.time(15, 30, 12)),
        ("153012.5", dt.time(15, 30, 12, 500000)),
        ("153012.123456", dt.time(15, 30, 12, 123456)),
        ("153012.1234567", dt.time(15, 30, 12, 123456)),  # beyond microseconds: cut
        ("153012.", dt.time(15, 30, 12)),
        ("1530", dt.time(15, 30)),  # partial: HHMM
        ("15", dt.time(15)),  # partial: HH
        ("15:30:12", dt.time(15, 30, 12)),  # ACR-NEMA legacy
        ("15:30:12.25", dt.time(15, 30, 12, 250000)),
        ("15:30", dt.time(15, 30)),
        ("235960", dt.time(23, 59, 59, 999999)),  # leap second
        ("000000 ", dt.time(0, 0)),
        ("", None),
    ],
)
def test_time_forms(text: str, expected: dt.time | None) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["2500", "1261", "156", "15301", "12:3", "1530xx", "15.5", "153012,5", "ab"])
def test_invalid_times_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1.0), (" -1.5 ", -1.5), ("+.5", 0.5), ("3.", 3.0), ("1e3", 1000.0), ("-2.5E-2", -0.025), ("", None)],
)
def test_decimal_forms(text: str, expected: float | None) -> None:
    assert parse_decimal(text) == expected


@pytest.mark.parametrize("text", ["nan", "inf", "Infinity", "1_000", "1,5", "1e999", "0x10", ".", "1 2"])
def test_decimals_python_would_take_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_decimal(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), (" -12 ", -12), ("+7", 7), ("3.0", 3), ("2147483647", 2**31 - 1), ("", None)],
)
def test_integer_forms(text: str, expected: int | None) -> None:
    assert parse_integer(text) == expected


@pytest.mark.parametrize("text", ["1.5", "2147483648", "-2147483649", "1_0", "x", "1e400"])
def test_invalid_integers_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_integer(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ORIGINAL\\PRIMARY\\AXIAL ", "ORIGINAL\\PRIMARY\\AXIAL"),
        ("-125.0\\ 12.5 \\0", "-125.0\\12.5\\0"),
        ("40", "40"),
        (" ", None),
        ("\\", None),
        ("", None),
    ],
)
def test_multi_values_are_joined_with_a_backslash(text: str, expected: str | None) -> None:
    assert join_values(text) == expected


@given(st.dates(min_value=dt.date(1, 1, 1)))
def test_every_date_round_trips(day: dt.date) -> None:
    assert parse_date(day.strftime("%Y%m%d").rjust(8, "0")) == day


@given(st.times())
def test_every_time_round_trips(moment: dt.time) -> None:
    assert parse_time(moment.strftime("%H%M%S.%f")) == moment.replace(tzinfo=None)


@given(st.text(max_size=20))
def test_arbitrary_text_never_crashes(text: str) -> None:
    """Anything in a file is either a value, None, or ValueError: never another exception."""
    blank = not text.strip(" \x00")
    for parse, kind in ((parse_date, dt.date), (parse_time, dt.time), (parse_decimal, float), (parse_integer, int)):
        try:
            value = parse(text)
        except ValueError as exc:
            assert not blank and str(exc)  # a reason, and never for an empty value
        else:
            assert (value is None) == blank
            assert value is None or isinstance(value, kind)
