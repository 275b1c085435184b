"""A C-FIND identifier (PS3.4 C.4.1.1.3) read into a :class:`FindQuery`: level, match conditions, return keys.

Matching (PS3.4 C.2.2.2), per element of the identifier:

- zero length, or only ``*``: universal matching (a return key);
- a UI value: a single UID or a backslash list of UIDs (list matching);
- a DA / TM value: a single value or a range ``A-B``, ``A-``, ``-B`` (a TM
  given to the minute matches the whole minute);
- PN: case-insensitive, with ``*`` / ``?`` wildcards;
- other strings: single value, or wildcard matching when ``*`` / ``?`` occur;
  several values (``CT\\MR``) match any of them;
- a sequence, or an attribute the index does not hold: a return key, answered
  empty (matching on it is not supported, and the pending status says so).

Hierarchical search only (no relational-query extended negotiation): above
the Query/Retrieve Level the identifier must hold the unique key of each
level as a single value (PS3.4 C.4.1.2.1; other keys there are matched too);
a non-empty key of a level below is a relational query. Both are refused with
0xA900, as is a missing or unknown QueryRetrieveLevel.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomflow.dicom.derived import uid_problem
from dicomflow.qr.exceptions import IdentifierError, MatchValueError
from dicomflow.qr.model import (
    ATTRIBUTES,
    LEVELS,
    QUERY_RETRIEVE_LEVEL,
    SPECIFIC_CHARACTER_SET,
    UNIQUE_KEYS,
    Attribute,
    Level,
    ModelName,
    depth,
)


@dataclass(frozen=True)
class Condition:
    """One matching key: an attribute and the values it matches (their form depends on ``attribute.match``).

    ``text`` / ``pn``: strings, each exact or with wildcards (any of them);
    ``uid`` / ``modality``: the list of values (any of them); ``int``: one
    integer; ``date`` / ``time``: one (start, end) range with open ends None.
    """

    attribute: Attribute
    values: tuple[str, ...] = ()
    number: int | None = None
    start: dt.date | dt.time | None = None
    end: dt.date | dt.time | None = None


@dataclass(frozen=True)
class FindQuery:
    """What one C-FIND asks: the level, the matching keys, and the tags to answer (in the identifier's order)."""

    model: ModelName
    level: Level
    conditions: tuple[Condition, ...]
    #: Every tag of the identifier (but Specific Character Set), answered filled or empty.
    return_tags: tuple[int, ...]
    #: The identifier's elements as given (their VRs answer the unknown ones).
    elements: dict[int, DataElement] = field(default_factory=dict)
    #: Keys answered empty because the index does not hold them (the pending status is then 0xFF01).
    unsupported: tuple[int, ...] = ()


def read_query(model: ModelName, identifier: Dataset) -> FindQuery:
    """The :class:`FindQuery` of ``identifier`` under ``model``.

    Raises:
        IdentifierError: no or an unknown level, a missing unique key above it, a relational query (0xA900).
        MatchValueError: a matching value that cannot be read (0xC000).
    """
    level = _level(model, identifier)
    here = depth(model, level)
    conditions: list[Condition] = []
    tags: list[int] = []
    unsupported: list[int] = []
    elements: dict[int, DataElement] = {}
    for elem in identifier:
        tag = int(elem.tag)
        if tag in (SPECIFIC_CHARACTER_SET, QUERY_RETRIEVE_LEVEL) or elem.tag.is_private or elem.tag.group == 0:
            continue
        elements[tag] = elem
        tags.append(tag)
        attribute = ATTRIBUTES.get(tag)
        if attribute is None:
            unsupported.append(tag)
            continue
        key_depth = depth(model, attribute.level_in(model))
        condition = _condition(attribute, elem) if attribute.match is not None and elem.VR != "SQ" else None
        if key_depth > here and condition is not None:
            raise IdentifierError(f"{attribute.keyword} is below the {level} level: relational queries are not supported")
        if key_depth > here:
            unsupported.append(tag)
        elif condition is not None:
            conditions.append(condition)
    _check_unique_keys(model, level, conditions)
    return FindQuery(model, level, tuple(conditions), tuple(tags), elements, tuple(unsupported))


def _level(model: ModelName, identifier: Dataset) -> Level:
    elem = identifier.get(QUERY_RETRIEVE_LEVEL)
    value = str(elem.value or "").strip().upper() if elem is not None else ""
    if not value:
        raise IdentifierError("the identifier has no QueryRetrieveLevel (0008,0052)")
    for level in LEVELS[model]:
        if level == value:
            return level
    raise IdentifierError(f"QueryRetrieveLevel {value[:16]!r} is not one of {', '.join(LEVELS[model])} of this model")


def _check_unique_keys(model: ModelName, level: Level, conditions: Iterable[Condition]) -> None:
    """Above the level, each level's unique key must be there as a single value (hierarchical search)."""
    given = {c.attribute.keyword: c for c in conditions}
    for upper in LEVELS[model][: depth(model, level)]:
        key = UNIQUE_KEYS[upper]
        condition = given.get(key)
        single = condition is not None and len(condition.values) == 1 and not _wild(condition.values[0])
        if not single:
            raise IdentifierError(f"a {level} query needs {key} as a single value (relational queries are not supported)")


def _wild(value: str) -> bool:
    return "*" in value or "?" in value


def _strings(elem: DataElement) -> list[str]:
    """The element's values as stripped strings (empty list: zero length)."""
    value = elem.value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    return [str(v).strip() for v in items if str(v).strip() != ""]


def _condition(attribute: Attribute, elem: DataElement) -> Condition | None:
    """The condition of one element; None for universal matching."""
    values = _strings(elem)
    if not values or all(v == "*" for v in values):
        return None
    kind = attribute.match
    if kind in ("text", "pn", "modality"):
        return Condition(attribute, tuple(values))
    if kind == "uid":
        for uid in values:
            problem = uid_problem(uid)
            if problem is not None:
                raise MatchValueError(f"{attribute.keyword}: {uid[:64]!r} is not a UID ({problem})")
        return Condition(attribute, tuple(values))
    if len(values) != 1:
        raise MatchValueError(f"{attribute.keyword}: one value expected, got {len(values)}")
    if kind == "int":
        try:
            return Condition(attribute, number=int(values[0]))
        except ValueError as exc:
            raise MatchValueError(f"{attribute.keyword}: {values[0][:16]!r} is not an integer") from exc
    return _range(attribute, values[0])


def _range(attribute: Attribute, value: str) -> Condition:
    """A DA or TM single value or range as a closed (start, end) interval."""
    start_text, dash, end_text = value.partition("-")
    if not dash:
        end_text = start_text
    if (dash and not start_text and not end_text) or "-" in end_text:
        raise MatchValueError(f"{attribute.keyword}: {value[:32]!r} is not a range")
    if attribute.match == "date":
        return Condition(attribute, start=_date(start_text, attribute) if start_text else None,
                         end=_date(end_text, attribute) if end_text else None)
    return Condition(attribute, start=_time(start_text, attribute, end=False) if start_text else None,
                     end=_time(end_text, attribute, end=True) if end_text else None)


def _date(text: str, attribute: Attribute) -> dt.date:
    try:
        return dt.datetime.strptime(text.replace(".", ""), "%Y%m%d").date()
    except ValueError as exc:
        raise MatchValueError(f"{attribute.keyword}: {text[:16]!r} is not a date YYYYMMDD") from exc


def _time(text: str, attribute: Attribute, *, end: bool) -> dt.time:
    """``HH[MM[SS[.F{1,6}]]]`` (``HH:MM:SS`` too); a range end given to the minute covers the whole minute."""
    clean = text.replace(":", "")
    whole, _, fraction = clean.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and (not fraction.isdigit() or len(fraction) > 6)):
        raise MatchValueError(f"{attribute.keyword}: {text[:16]!r} is not a time HHMMSS.FFFFFF")
    parts = [int(whole[i:i + 2]) for i in range(0, len(whole), 2)]
    top = (23, 59, 59)
    while len(parts) < 3:
        parts.append(top[len(parts)] if end else 0)
    micro = int(fraction.ljust(6, "9" if end else "0")) if fraction else (999999 if end else 0)
    try:
        return dt.time(parts[0], parts[1], parts[2], micro)
    except ValueError as exc:
        raise MatchValueError(f"{attribute.keyword}: {text[:16]!r} is not a time") from exc


__all__ = ["Condition", "FindQuery", "read_query"]
