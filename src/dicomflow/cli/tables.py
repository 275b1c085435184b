"""How the list and status commands print: rich tables that never cut an identifier, or JSON.

Rich shortens a cell that does not fit with an ellipsis, and when stdout is
not a terminal it assumes 80 columns: ``dicomflow topics list | grep
storage_queue`` found nothing, the table said ``storage_que…``. Here:

- when the output is not a terminal, the console is wide enough for any
  table, so each row is one line with every value whole (for grep, awk, cut);
- on a narrow terminal the columns are sized here, not by rich: text
  columns wrap between words first; only when that is not enough are the
  widest identifier columns (topic, UID, path, AE title, address, letter ID)
  *folded* over lines; every cell folds (``overflow="fold"``), so no
  character is ever dropped or replaced by an ellipsis.

Two rich settings look right and are not: ``no_wrap=True`` truncates a value
that does not fit, silently; and rich's own layout narrows a column to
nothing when the console is narrow, values included. ``--json`` is the stable form for scripts (its
keys are documented in docs/operations.md, "Output for scripts").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Literal

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

#: Width of a console that is not a terminal: wider than any table, so none is ever narrowed.
PIPE_WIDTH = 100_000

Kind = Literal["id", "text", "number"]


@dataclass(frozen=True)
class Col:
    """A column: its header and what it holds (``id`` values are never cut, ``number`` is right-aligned)."""

    header: str
    kind: Kind = "text"


def make_console(*, stderr: bool = False, file: IO[str] | None = None, width: int | None = None) -> Console:
    """A console for a command's output; unbounded width when it is not a terminal (see the module docstring)."""
    console = Console(stderr=stderr, file=file, width=width)
    if width is None and not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def table(title: str | None, columns: Sequence[Col], rows: Iterable[Sequence[str]], width: int) -> Table:
    """A rich table for a console ``width`` columns wide that keeps every character of every cell.

    Its columns have fixed widths (:func:`column_widths`); when even the
    narrowest layout is wider than ``width``, the table is wider than the
    console (print it with :func:`print_table`, which lets the terminal wrap
    its lines rather than let rich drop cells).
    """
    body = [list(r) for r in rows]
    out = Table(title=title)
    for col, w in zip(columns, column_widths(columns, body, width - _overhead(columns)), strict=True):
        out.add_column(col.header, width=w, justify="right" if col.kind == "number" else "left", overflow="fold")
    for r in body:
        out.add_row(*r)
    return out


def _overhead(columns: Sequence[Col]) -> int:
    """Cells a table's borders and padding take: one space each side of a column, n + 1 rules."""
    return 3 * len(columns) + 1


def column_widths(columns: Sequence[Col], body: Sequence[Sequence[str]], available: int) -> list[int]:
    """Column widths that fit ``available`` cells if at all possible, identifiers whole as long as possible.

    Each column starts at its longest value or header, then, while the sum is
    too large, the widest column of each stage narrows one cell at a time:

    1. text and number columns, down to their longest word (headers and
       text wrap between words);
    2. the same, down to their longest value word (headers fold);
    3. text and identifier columns, down to 1 (identifiers fold at last);
    4. every column, down to 1.

    Rich's own layout is not used: it narrows a column to nothing when the
    console is narrow, and the column's values with it.
    """
    n = len(columns)
    cells = [[col.header, *(r[i] for r in body)] for i, col in enumerate(columns)]
    widths = [max(cell_len(c) for c in column) for column in cells]

    def longest_word(values: list[str]) -> int:
        return max([1, *(cell_len(w) for v in values for w in v.split())])

    plain = [i for i, col in enumerate(columns) if col.kind != "id"]
    folding = [i for i, col in enumerate(columns) if col.kind != "number"]
    stages = [
        (plain, [longest_word(column) for column in cells]),
        (plain, [longest_word(column[1:]) for column in cells]),
        (folding, [1] * n),
        (list(range(n)), [1] * n),
    ]
    for candidates, floor in stages:
        while sum(widths) > available:
            shrinkable = [i for i in candidates if widths[i] > floor[i]]
            if not shrinkable:
                break
            widths[max(shrinkable, key=lambda i: widths[i])] -= 1
    return widths


def print_table(title: str | None, columns: Sequence[Col], rows: Iterable[Sequence[str]],
                console: Console | None = None) -> None:
    """Print a :func:`table`; wider than the console only when no layout fits (the terminal wraps it)."""
    console = console or make_console()
    body = [list(r) for r in rows]
    rendered = table(title, columns, body, console.width)
    needed = sum(c.width or 0 for c in rendered.columns) + _overhead(columns)
    if needed <= console.width:
        console.print(rendered)
        return
    shown = console.width  # console.print(width=) can only narrow
    console.width = needed
    try:
        console.print(rendered)
    finally:
        console.width = shown


def print_json(data: object) -> None:
    """``data`` as indented JSON on stdout (UTF-8 as is, not escaped)."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


__all__ = ["PIPE_WIDTH", "Col", "column_widths", "make_console", "print_json", "print_table", "table"]
