"""Per-stage medians (and means) of per-instance stage records, printed as one table: issue 22's breakdown."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

#: The stages in the order an instance goes through them (metrics/stages.py); others follow alphabetically.
ORDER = ("receive", "pdv", "parse", "check", "write", "file_sync", "place", "event", "folder_sync", "ack",
         "folder_wait", "journal_sync", "journal", "unmark", "bookkeeping", "response")
#: Stages that overlap another one (not part of the sum): folder_sync beside ack, or inside journal with journal_sync.
OVERLAPPING = frozenset({"folder_sync", "journal_sync"})
#: Counts, not times.
COUNTS = frozenset({"pdus", "group"})


def _ms(values: Sequence[int]) -> tuple[float, float]:
    return statistics.median(values) / 1e6, statistics.fmean(values) / 1e6


def stage_table(columns: Mapping[str, Sequence[Mapping[str, int]]]) -> list[str]:
    """Lines: one row per stage, per column its median / mean in ms over the instances (0 where absent)."""
    names = {k for records in columns.values() for r in records for k in r}
    stages = [s for s in ORDER if s in names] + sorted(names - set(ORDER) - COUNTS - {"cycle"})
    width = 24
    lines = [f"{'stage (ms per instance)':<{width}}" + "".join(f"{c[:30]:>32}" for c in columns),
             f"{'':<{width}}" + "".join(f"{'median':>16}{'mean':>16}" for _ in columns)]
    for stage in [*stages, "sum of stages", "cycle (response to response)", "cycle - sum (unnamed)"]:
        row = f"{stage + (' (overlaps)' if stage in OVERLAPPING else ''):<{width}}"
        for records in columns.values():
            if stage in names and not any(stage in r for r in records):
                row += f"{'-':>16}{'-':>16}"  # not a stage of this column
                continue
            values = [v for v in (_value(r, stage, stages) for r in records) if v is not None]
            row += "".join(f"{x:>16.3f}" for x in _ms(values)) if values else f"{'-':>16}{'-':>16}"
        lines.append(row)
    pdus = [[r.get("pdus", 0) for r in records] for records in columns.values()]
    lines.append(f"{'PDUs per instance':<{width}}" + "".join(
        f"{statistics.median(p) if p else 0:>16}{statistics.fmean(p) if p else 0:>16.2f}" for p in pdus))
    groups = [[r["group"] for r in records if "group" in r] for records in columns.values()]
    if any(groups):  # receiver.ack = "journal": instances made durable by the same group commit
        lines.append(f"{'group commit size':<{width}}" + "".join(
            f"{statistics.median(g) if g else 0:>16}{statistics.fmean(g) if g else 0:>16.2f}" for g in groups))
    return lines


def _value(record: Mapping[str, int], stage: str, stages: Sequence[str]) -> int | None:
    total = sum(record.get(s, 0) for s in stages if s not in OVERLAPPING)
    if stage == "sum of stages":
        return total
    if stage == "cycle (response to response)":
        return record.get("cycle")
    if stage == "cycle - sum (unnamed)":
        return record["cycle"] - total if "cycle" in record else None
    return record.get(stage, 0)


__all__ = ["stage_table"]
