"""The stack's state file: written atomically, read back, followed by status / down / every command's brokers."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dicomflow.cli import app
from dicomflow.errors import StackError
from dicomflow.settings import Settings, StackSettings
from dicomflow.stack import ClusterLayout, LocalStack
from dicomflow.stack.state import STATE_FILE, NodeState, StackState, read_state, remove_state, write_state

THREE = StackState((NodeState(1, 29092, 29093), NodeState(2, 29094, 29095), NodeState(3, 29096, 29097)))


def test_written_then_read_back_with_stable_keys(tmp_path: Path) -> None:
    path = write_state(tmp_path, THREE)
    assert path == tmp_path.resolve() / STATE_FILE
    data = json.loads(path.read_text())
    assert set(data) == {"version", "kafka", "clickhouse", "s3", "started_at"}
    assert data["kafka"] == {"nodes": [{"node_id": 1, "port": 29092, "controller_port": 29093},
                                       {"node_id": 2, "port": 29094, "controller_port": 29095},
                                       {"node_id": 3, "port": 29096, "controller_port": 29097}],
                             "secure": False, "bootstrap": "127.0.0.1:29092,127.0.0.1:29094,127.0.0.1:29096"}
    state = read_state(tmp_path)
    assert state is not None and state.started_at  # the time of `up` is filled in
    assert dataclasses.replace(state, started_at="") == THREE
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temporary file left behind


def test_a_rewrite_replaces_the_file_whole(tmp_path: Path) -> None:
    write_state(tmp_path, THREE)
    inode = (tmp_path / STATE_FILE).stat().st_ino
    write_state(tmp_path, StackState((NodeState(1, 19092, 19093),), secure=True))
    state = read_state(tmp_path)
    assert state is not None and state.brokers == 1 and state.secure
    assert (tmp_path / STATE_FILE).stat().st_ino != inode  # renamed over, not written in place


def test_no_file_is_no_state_and_remove_is_idempotent(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    write_state(tmp_path, THREE)
    remove_state(tmp_path)
    remove_state(tmp_path)
    assert read_state(tmp_path) is None


@pytest.mark.parametrize("content", ["{not json", "[]", '{"version": 99, "kafka": {}}',
                                     '{"version": 1, "kafka": {"nodes": []}}',
                                     '{"version": 1, "kafka": {"nodes": [{"node_id": 1}]}}'])
def test_a_damaged_file_is_an_error_naming_it(tmp_path: Path, content: str) -> None:
    (tmp_path / STATE_FILE).write_text(content)
    with pytest.raises(StackError, match=STATE_FILE):
        read_state(tmp_path)


def test_the_state_describes_the_same_layout_as_it_was_started(tmp_path: Path) -> None:
    settings = StackSettings(dir=tmp_path)  # defaults: one node on 19092
    layout = ClusterLayout.of(THREE.applied_to(settings))
    assert layout.size == 3 and layout.bootstrap == THREE.bootstrap
    assert [(n.port, n.controller_port) for n in layout.nodes] == [(29092, 29093), (29094, 29095), (29096, 29097)]
    assert layout.root == tmp_path.resolve() / "kafka-cluster-3"


def _settings(tmp_path: Path) -> Settings:
    return dataclasses.replace(Settings(), stack=StackSettings(dir=tmp_path, postgres_port=1))


def test_status_follows_the_state_unless_told_otherwise(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert [s.name for s in LocalStack(settings).status()] == ["kafka", "postgresql"]
    write_state(tmp_path, THREE)
    stack = LocalStack(settings)
    assert stack.kafka.bootstrap == THREE.bootstrap
    statuses = stack.status()
    assert [s.name for s in statuses] == ["kafka-1", "kafka-2", "kafka-3", "postgresql"]
    assert [s.address for s in statuses[:3]] == THREE.bootstrap.split(",")
    assert LocalStack(settings, brokers=1).kafka.size == 1  # an explicit --brokers wins


def test_down_forgets_the_state(tmp_path: Path) -> None:
    write_state(tmp_path, THREE)
    stack = LocalStack(_settings(tmp_path))
    stack.down()  # nothing runs in this folder: only the state goes
    assert read_state(tmp_path) is None and stack.state is None


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in [n for n in os.environ if n.startswith("DICOMFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("DICOMFLOW_STACK_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # no ./dicomflow.toml
    return tmp_path


def _brokers(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "config", "show"])
    assert result.exit_code == 0, result.output
    return str(json.loads(result.stdout)["kafka"]["brokers"])


def test_every_command_bootstraps_from_every_node_of_the_stack(clean_env: Path) -> None:
    assert _brokers() == "127.0.0.1:19092"
    write_state(clean_env, THREE)
    assert _brokers() == THREE.bootstrap


def test_brokers_the_user_set_win_over_the_stack(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_state(clean_env, THREE)
    config = clean_env / "mine.toml"
    config.write_text('[kafka]\nbrokers = "kafka1:9092"\n')
    assert _brokers("--config", str(config)) == "kafka1:9092"
    config.write_text('[kafka]\nbrokers = "127.0.0.1:19092"\n')  # the default value, set on purpose
    assert _brokers("--config", str(config)) == "127.0.0.1:19092"
    monkeypatch.setenv("DICOMFLOW_KAFKA_BROKERS", "kafka2:9092")
    assert _brokers() == "kafka2:9092"


def test_a_damaged_state_file_stops_a_command_naming_it(clean_env: Path) -> None:
    (clean_env / STATE_FILE).write_text("{")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2 and STATE_FILE in result.output


def test_the_s3_server_is_remembered(tmp_path: Path) -> None:
    write_state(tmp_path, dataclasses.replace(THREE, s3=True))
    state = read_state(tmp_path)
    assert state is not None and state.s3 and not state.clickhouse
    (tmp_path / STATE_FILE).write_text(json.dumps({**json.loads((tmp_path / STATE_FILE).read_text()), "s3": None}))
    older = read_state(tmp_path)  # a file of an earlier release has no "s3" key
    assert older is not None and not older.s3
