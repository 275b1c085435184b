"""Judging the fuzz phase: each input's outcome, and the checks the suite reports."""

from __future__ import annotations

from dicomflow_faults.checks import Check, DeadLetter
from dicomflow_faults.fuzz.cases import CASE_HEADER, Case, FuzzResult


def _case_of(letter: DeadLetter) -> int | None:
    """The case a dead letter belongs to: its ``faults.case`` header, else its ``fuzz-<id>`` key."""
    raw = letter.headers.get(CASE_HEADER)
    if raw is None and letter.key and letter.key.startswith(b"fuzz-"):
        raw = letter.key[5:].decode("ascii", "replace")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def judge(cases: list[Case], dead: list[DeadLetter], rows: set[str], committed: dict[int, int] | None = None) -> int:
    """Give every case its outcome; return the number of dead letters lacking a class or reason.

    A case neither dead-lettered nor indexed is *unprocessed* when it lies at
    or past its partition's committed offset (the consumer never got past
    it: stuck, not lost), else *lost*.
    """
    by_id = {c.id: c for c in cases}
    without_reason = 0
    for letter in dead:
        case_id = _case_of(letter)
        case = by_id.get(case_id) if case_id is not None else None
        if not letter.reason or not letter.error_class:
            without_reason += 1
        if case is not None and case.outcome is None:
            case.outcome = "dead-lettered"
            case.error_class = letter.error_class
    for case in cases:
        if case.outcome is None:
            persisted = case.sop_uid is not None and case.sop_uid in rows and (case.valid_event or case.kind != "payload")
            if persisted:
                case.outcome = "persisted"
            elif committed and case.position is not None and case.position[1] >= committed.get(case.position[0], 0):
                case.outcome = "unprocessed"
            else:
                case.outcome = "lost"
    return without_reason


def checks(r: FuzzResult) -> list[Check]:
    # Inputs the consumer never reached are judged by the "got through" check only.
    done = [c for c in r.cases if c.outcome != "unprocessed"]
    controls_bad = [c for c in done if c.kind == "control" and c.outcome != "persisted"]
    specials_not_dlq = [c for c in done if c.kind == "special" and c.outcome != "dead-lettered"]
    invalid_not_dlq = [c for c in done if c.kind == "payload" and not c.valid_event and c.outcome != "dead-lettered"]
    lost = [c for c in r.cases if c.outcome == "lost"]
    unprocessed = [c for c in r.cases if c.outcome == "unprocessed"]

    def sample(items: list[Case]) -> str:
        return "; ".join(f"#{c.id} {c.label}" for c in items[:3])

    return [
        Check("fuzz: consumer never crashed", r.crashes == 0, f"{r.crashes} unexpected exit(s)"),
        Check("fuzz: consumer went idle and exited cleanly by itself", r.went_idle,
              f"exit code {r.exit_code}" + ("" if r.went_idle else " after the suite stopped it")),
        Check("fuzz: the consumer got through every input", not unprocessed,
              f"{len(unprocessed)} never processed" + (
                  "; no commit past " + ", ".join(f"partition {p} offset {o}" for p, o in sorted(r.stuck_at.items()))
                  + " (the failing batch is in the consumer's log)" if unprocessed else "")),
        Check("fuzz: no input lost (each dead-lettered or indexed)", not lost,
              f"{len(lost)} lost" + (f": {sample(lost)}" if lost else "")),
        Check("fuzz: every invalid payload dead-lettered", not invalid_not_dlq,
              f"{len(invalid_not_dlq)} not in the DLQ" + (f": {sample(invalid_not_dlq)}" if invalid_not_dlq else "")),
        Check("fuzz: every special case dead-lettered", not specials_not_dlq,
              f"{len(specials_not_dlq)} not in the DLQ" + (f": {sample(specials_not_dlq)}" if specials_not_dlq else "")),
        Check("fuzz: every dead letter has an error class and a reason", r.dead_letters_without_reason == 0,
              f"{r.dead_letters_without_reason} without"),
        Check("fuzz: good instances among the bad ones were indexed", not controls_bad,
              f"{len(controls_bad)} control(s) not indexed" + (f": {sample(controls_bad)}" if controls_bad else "")),
    ]


__all__ = ["checks", "judge"]
