"""The list and status tables: no identifier is ever cut, at any width, on a terminal or in a pipe."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from dicomflow.cli.tables import PIPE_WIDTH, Col, column_widths, make_console, print_table

COLUMNS = (Col("topic", "id"), Col("partitions", "number"), Col("replication", "number"), Col("min ISR", "number"),
           Col("retention"), Col("used by dicomflow"))
TOPICS = ["storage_queue", "storage_queue.dlq", "dicom_state_queue_0123456789abcdef", "audit_queue"]
ROWS = [[name, "6", "1", "-", "7 d", "yes"] for name in TOPICS]


def render(width: int | None, rows: list[list[str]] = ROWS) -> str:
    out = io.StringIO()
    print_table("topics on 127.0.0.1:19092", COLUMNS, rows, make_console(file=out, width=width))
    return out.getvalue()


def column_text(text: str, index: int) -> str:
    """Every fragment of column ``index`` in the body of a rendered table, joined: the column's values, whole."""
    body = text[text.index("┩"):].splitlines()[1:]
    return "".join(line.split("│")[index + 1].strip() for line in body if line.startswith("│"))


def test_a_pipe_gets_one_line_per_row_with_every_value_whole() -> None:
    console = make_console(file=io.StringIO())  # a StringIO is not a terminal
    assert not console.is_terminal and console.width == PIPE_WIDTH
    text = render(None)
    for name in TOPICS:
        [line] = [x for x in text.splitlines() if name + " " in x]
        assert "7 d" in line and "yes" in line
    assert "…" not in text


@pytest.mark.parametrize("width", [120, 80, 60, 40, 30, 20, 10])
def test_no_width_cuts_an_identifier_or_drops_a_value(width: int) -> None:
    text = render(width)
    assert "…" not in text
    assert column_text(text, 0) == "".join(TOPICS)
    for index, value in ((1, "6"), (2, "1"), (3, "-")):
        assert column_text(text, index) == value * len(TOPICS)
    assert column_text(text, 4).replace(" ", "") == "7d" * len(TOPICS)


def test_at_40_columns_the_headers_give_way_before_a_short_identifier() -> None:
    rows = [["storage_queue", "6", "1", "-", "7 d", "yes"]]
    text = render(40, rows)
    assert any("storage_queue" in line for line in text.splitlines())
    assert max(len(line) for line in text.splitlines()) <= 40


def test_the_layout_gives_way_in_order() -> None:
    cols = (Col("id", "id"), Col("n", "number"), Col("words"))
    body = [["a" * 20, "12345", "three short words"]]
    assert column_widths(cols, body, 100) == [20, 5, 17]
    assert column_widths(cols, body, 30) == [20, 5, 5]  # text wraps between words first
    assert column_widths(cols, body, 20) == [10, 5, 5]  # then the identifier folds; numbers keep their width
    assert column_widths(cols, body, 0) == [1, 1, 1]  # nothing fits: the narrowest layout (wider than the console)


def test_a_command_in_a_pipe_prints_whole_identifiers_and_its_json(tmp_path: object) -> None:
    """`dicomflow stack status` in a pipe (no services needed: a fresh stack folder shows everything stopped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    env.update(DICOMFLOW_STACK_DIR=f"{tmp_path}/a-rather-long-stack-folder-name-for-the-log-paths", COLUMNS="40")
    table = subprocess.run([sys.executable, "-m", "dicomflow.cli", "stack", "status"], env=env,
                           capture_output=True, text=True, check=True).stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "dicomflow.cli", "stack", "status", "--json"], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    assert [s["name"] for s in data["services"]] == ["kafka", "postgresql"]
    for s in data["services"]:
        assert not s["running"] and s["pid"] is None
        [line] = [x for x in table.splitlines() if s["log_file"] in x]
        assert s["name"] in line and s["address"] in line
