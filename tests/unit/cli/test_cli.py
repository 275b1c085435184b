"""The command line: every command registered, with the names the README documents."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import typer.main
from typer.core import TyperGroup

from dicomflow.cli import app

COMMANDS = {
    "config": {"show"},
    "stack": {"up", "down", "status"},
    "storage": {"migrate"},
    "topics": {"create", "list"},
    "db": {"migrate", "status"},
    "dlq": {"list", "show", "redrive"},
    "extract": None,
    "consume": None,
    "delete": None,
    "purge": None,
    "undelete": None,
    "scp": None,
    "users": {"add"},
    "publish": None,
    "web": None,
    "images": None,
    "warehouse": {"ddl", "run"},
    "report": None,
    "demo": None,
}

#: The options of the warehouse commands, as the README documents them.
OPTIONS = {
    ("warehouse", "ddl"): {"--target", "--clickhouse-syntax"},
    ("warehouse", "run"): {"--max-messages", "--until-idle", "--path", "--metrics-port"},
    ("report",): {"--clickhouse", "--json", "--html", "--largest"},
    ("stack", "up"): {"--clickhouse", "--brokers", "--secure", "--s3"},
}


def test_every_command_and_group_is_registered() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    assert set(root.commands) == set(COMMANDS)
    for name, subcommands in COMMANDS.items():
        command = root.commands[name]
        if subcommands is None:
            assert not isinstance(command, TyperGroup), name
        else:
            assert isinstance(command, TyperGroup), name
            assert set(command.commands) == subcommands, name


def test_python_dash_m_dicomflow_and_dicomflow_cli_run_the_same_app() -> None:
    for module in ("dicomflow", "dicomflow.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, check=True).stdout
        for name in COMMANDS:
            assert name in out, (module, name)


def test_the_warehouse_commands_keep_their_options() -> None:
    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    for path, options in OPTIONS.items():
        command = root.commands[path[0]]
        for name in path[1:]:
            assert isinstance(command, TyperGroup)
            command = command.commands[name]
        names = {opt for param in command.params for opt in param.opts if opt.startswith("--")}
        assert names == options, path


def test_the_readme_command_table_names_every_command_once() -> None:
    readme = (Path(__file__).parents[3] / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Commands") :]
    table = table[: table.index("\n\n", table.index("| command |"))]
    rows = [re.split(r"(?<!\\)\|", line)[1] for line in table.splitlines() if line.startswith("| `dicomflow ")]
    seen: list[str] = []
    for cell in rows:
        command = re.match(r" `dicomflow ([a-z]+)(.*?)`", cell.replace("\\|", "|"))
        assert command, cell
        name, rest = command.group(1), command.group(2)
        subcommands = COMMANDS[name]
        if subcommands is None:
            seen.append(name)
        else:
            words = {word for word in re.split(r"[\s|]+", rest) if word in subcommands}
            assert words, cell
            seen.extend(f"{name} {word}" for word in words)
    expected = [name for name, subs in COMMANDS.items() if subs is None]
    expected += [f"{name} {sub}" for name, subs in COMMANDS.items() if subs for sub in subs]
    assert sorted(seen) == sorted(expected)
