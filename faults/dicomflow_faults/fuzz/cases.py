"""The fuzz phase's inputs (:class:`Case`) and its figures (:class:`FuzzResult`)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from dicomflow_faults.checks import Check

CASE_HEADER = "faults.case"
Kind = Literal["payload", "file", "special", "control"]
Outcome = Literal["dead-lettered", "persisted", "unprocessed", "lost"]


@dataclass
class Case:
    """One input: what it is, its bytes, and the instance it names (if it names one)."""

    id: int
    kind: Kind
    label: str
    value: bytes
    sop_uid: str | None = None
    #: True when the payload is a valid store event (it may then legitimately be indexed).
    valid_event: bool = False
    outcome: Outcome | None = None
    error_class: str = ""
    #: Where the input landed on the main topic: (partition, offset).
    position: tuple[int, int] | None = None


@dataclass
class FuzzResult:
    """Figures and verdicts of the fuzz phase."""

    cases: list[Case] = field(default_factory=list)
    seconds: float = 0.0
    crashes: int = 0
    exit_code: int | None = None
    #: True when the consumer ended by itself once idle (not stopped by the suite after a stall).
    went_idle: bool = False
    dead_letters_without_reason: int = 0
    #: Per partition: the committed offset where the consumer stopped, when it did not drain the topic.
    stuck_at: dict[int, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)

    def count(self, kinds: tuple[Kind, ...], outcome: Outcome | None = None) -> int:
        return sum(1 for c in self.cases if c.kind in kinds and (outcome is None or c.outcome == outcome))

    @property
    def bad_inputs(self) -> int:
        return self.count(("payload", "file", "special"))

    @property
    def lost(self) -> int:
        return self.count(("payload", "file", "special", "control"), "lost")

    def error_classes(self) -> Counter[str]:
        return Counter(c.error_class for c in self.cases if c.outcome == "dead-lettered")



__all__ = ["CASE_HEADER", "Case", "FuzzResult", "Kind", "Outcome"]
