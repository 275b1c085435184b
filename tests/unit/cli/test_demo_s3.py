"""``dicomflow demo --s3``: the settings every component of the run gets (the plumbing, without a stack)."""

from __future__ import annotations

import dataclasses

import pytest
from typer.testing import CliRunner

from dicomflow.cli import app
from dicomflow.demo import _component_env, run_settings
from dicomflow.errors import StackError
from dicomflow.settings import Settings, StorageS3Settings, from_child_env

S3 = StorageS3Settings(endpoint="http://127.0.0.1:19070", bucket="dicomflow", access_key_id="k",
                       secret_access_key="s3cret", path_style=True, prefix="demo/")


def _stack_settings() -> Settings:
    base = Settings()
    return dataclasses.replace(base, storage=dataclasses.replace(base.storage, s3=S3))


def test_s3_sets_the_backend_and_keeps_the_stack_endpoint() -> None:
    run = run_settings(_stack_settings(), s3=True)
    assert run.storage.backend == "s3"
    assert run.storage.s3 == S3


def test_without_s3_the_settings_are_the_stack_ones() -> None:
    stack = _stack_settings()
    assert run_settings(stack, s3=False) is stack
    assert run_settings(stack, s3=False).storage.backend == "filesystem"


def test_s3_without_an_endpoint_is_refused() -> None:
    with pytest.raises(StackError, match="endpoint"):
        run_settings(Settings(), s3=True)


def test_every_component_reads_backend_s3_and_the_bucket_from_its_environment() -> None:
    env = _component_env(run_settings(_stack_settings(), s3=True), 11112)
    assert env["DICOMFLOW_STORAGE_BACKEND"] == "s3"
    child = from_child_env(env)  # what `dicomflow scp`, `consume`, `warehouse run` build from it
    assert child.storage.backend == "s3"
    assert child.storage.s3 == S3
    assert child.receiver.port == 11112
    assert child.storage.root.is_absolute()


def test_the_command_has_the_option() -> None:
    result = CliRunner().invoke(app, ["demo", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "--s3" in result.output
