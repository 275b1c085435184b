"""The ``[lifecycle]`` section: deletes, the purge worker and the change events (issue 20)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration_s(text: str) -> float:
    """Seconds of a duration like ``"0s"``, ``"90"``, ``"30m"``, ``"7d"`` (no unit: seconds).

    Raises:
        ValueError: not a number with one of the units ms, s, m, h, d.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 0s, 30m, 12h or 7d")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


@dataclass(frozen=True)
class LifecycleSettings:
    """How deletes propagate."""

    #: How long after a delete its objects stay recoverable before ``dicomflow purge`` removes them
    #: (``"0s"``: purged as soon as the worker sees the delete).
    purge_delay: str = "0s"
    #: Deleted instances whose objects one purge transaction removes.
    purge_batch: int = 500
    #: Change-log rows the change publisher reads and publishes per round (dicom_change_queue).
    publish_batch: int = 1000

    @property
    def purge_delay_s(self) -> float:
        return duration_s(self.purge_delay)


def lifecycle_checks(s: LifecycleSettings) -> list[tuple[bool, str, str]]:
    """The section's (ok, key, problem) checks, run by the loader with the others."""
    try:
        duration_s(s.purge_delay)
        delay_ok = True
    except ValueError:
        delay_ok = False
    return [
        (delay_ok, "lifecycle.purge_delay", "must be a duration such as 0s, 30m or 7d"),
        (s.purge_batch >= 1, "lifecycle.purge_batch", "must be at least 1"),
        (s.publish_batch >= 1, "lifecycle.publish_batch", "must be at least 1"),
    ]


__all__ = ["LifecycleSettings", "duration_s", "lifecycle_checks"]
