"""[storage] backend and [storage.s3]: file, DICOMFLOW_* variables, the AWS fallbacks, masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomflow.errors import ConfigError
from dicomflow.settings import as_dict, from_child_env, load_settings, to_child_env


def test_the_defaults_keep_the_filesystem() -> None:
    s = load_settings(None, {})
    assert s.storage.backend == "filesystem"
    assert s.storage.s3.bucket == "dicomflow"
    assert s.storage.s3.endpoint == ""
    assert not s.storage.s3.path_style


def test_a_toml_file_sets_the_s3_table(tmp_path: Path) -> None:
    cfg = tmp_path / "dicomflow.toml"
    cfg.write_text('[storage]\nbackend = "s3"\n\n[storage.s3]\nendpoint = "http://127.0.0.1:9000"\n'
                   'bucket = "pacs"\nprefix = "archive/"\npath_style = true\naccess_key_id = "k"\n'
                   'secret_access_key = "s"\n')
    s3 = load_settings(cfg, {}).storage.s3
    assert (s3.endpoint, s3.bucket, s3.prefix, s3.path_style, s3.access_key_id, s3.secret_access_key) == \
        ("http://127.0.0.1:9000", "pacs", "archive/", True, "k", "s")


def test_dicomflow_variables_set_every_field() -> None:
    env = {
        "DICOMFLOW_STORAGE_BACKEND": "s3", "DICOMFLOW_STORAGE_S3_ENDPOINT": "https://minio:9000",
        "DICOMFLOW_STORAGE_S3_BUCKET": "b", "DICOMFLOW_STORAGE_S3_REGION": "eu-west-3",
        "DICOMFLOW_STORAGE_S3_PREFIX": "p/", "DICOMFLOW_STORAGE_S3_ACCESS_KEY_ID": "id",
        "DICOMFLOW_STORAGE_S3_SECRET_ACCESS_KEY": "secret", "DICOMFLOW_STORAGE_S3_PATH_STYLE": "true",
    }
    s = load_settings(None, env)
    assert s.storage.backend == "s3"
    s3 = s.storage.s3
    assert (s3.endpoint, s3.bucket, s3.region, s3.prefix, s3.access_key_id, s3.secret_access_key, s3.path_style) == \
        ("https://minio:9000", "b", "eu-west-3", "p/", "id", "secret", True)
    assert from_child_env(to_child_env(s)) == s


def test_the_secret_is_masked_but_not_the_key_id() -> None:
    s = load_settings(None, {"DICOMFLOW_STORAGE_S3_ACCESS_KEY_ID": "AKIA1", "DICOMFLOW_STORAGE_S3_SECRET_ACCESS_KEY": "x"})
    shown = as_dict(s)["storage"]["s3"]
    assert shown["secret_access_key"] == "***"
    assert shown["access_key_id"] == "AKIA1"


def test_aws_variables_are_fallbacks_and_dicomflow_ones_win() -> None:
    aws = {"AWS_ACCESS_KEY_ID": "aws-id", "AWS_SECRET_ACCESS_KEY": "aws-secret", "AWS_REGION": "ap-south-1",
           "AWS_DEFAULT_REGION": "ignored", "AWS_ENDPOINT_URL": "http://generic", "AWS_ENDPOINT_URL_S3": "http://s3"}
    s3 = load_settings(None, aws).storage.s3
    assert (s3.access_key_id, s3.secret_access_key, s3.region, s3.endpoint) == \
        ("aws-id", "aws-secret", "ap-south-1", "http://s3")
    s3 = load_settings(None, {**aws, "DICOMFLOW_STORAGE_S3_ACCESS_KEY_ID": "mine",
                              "DICOMFLOW_STORAGE_S3_REGION": "eu-north-1"}).storage.s3
    assert (s3.access_key_id, s3.secret_access_key, s3.region) == ("mine", "aws-secret", "eu-north-1")


def test_a_config_file_wins_over_the_aws_variables(tmp_path: Path) -> None:
    cfg = tmp_path / "dicomflow.toml"
    cfg.write_text('[storage.s3]\nregion = "from-file"\n')
    assert load_settings(cfg, {"AWS_REGION": "from-env"}).storage.s3.region == "from-file"


def test_the_credentials_file_profile_is_the_last_fallback(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = d-id\naws_secret_access_key = d-secret\n\n"
                     "[archive]\naws_access_key_id = a-id\naws_secret_access_key = a-secret\n")
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "credentials").write_text(creds.read_text())
    s3 = load_settings(None, {"HOME": str(tmp_path)}).storage.s3
    assert (s3.access_key_id, s3.secret_access_key) == ("d-id", "d-secret")
    s3 = load_settings(None, {"AWS_SHARED_CREDENTIALS_FILE": str(creds), "AWS_PROFILE": "archive"}).storage.s3
    assert (s3.access_key_id, s3.secret_access_key) == ("a-id", "a-secret")
    s3 = load_settings(None, {"HOME": str(tmp_path), "AWS_ACCESS_KEY_ID": "env", "AWS_SECRET_ACCESS_KEY": "env-s"}).storage.s3
    assert s3.access_key_id == "env"
    assert load_settings(None, {"HOME": str(tmp_path), "AWS_PROFILE": "missing"}).storage.s3.access_key_id == ""


def test_a_broken_credentials_file_names_itself(tmp_path: Path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("no section header\n")
    with pytest.raises(ConfigError, match="credentials"):
        load_settings(None, {"AWS_SHARED_CREDENTIALS_FILE": str(creds)})


@pytest.mark.parametrize(("env", "key"), [
    ({"DICOMFLOW_STORAGE_BACKEND": "gcs"}, "storage.backend"),
    ({"DICOMFLOW_STORAGE_S3_MULTIPART_CHUNK_BYTES": "1048576"}, "storage.s3.multipart_chunk_bytes"),
    ({"DICOMFLOW_STORAGE_BACKEND": "s3", "DICOMFLOW_STORAGE_S3_BUCKET": ""}, "storage.s3.bucket"),
    ({"DICOMFLOW_STORAGE_S3_PREFIX": "a/../b"}, "storage.s3.prefix"),
    ({"DICOMFLOW_STACK_S3_PORT": "x"}, "stack.s3_port"),
])
def test_bad_values_name_their_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").split(r"\.")[-1]):
        load_settings(None, env)


def test_the_receive_spool_has_a_default_and_its_variable() -> None:
    assert load_settings(None, {}).storage.spool == Path(".dicomflow/spool")
    s = load_settings(None, {"DICOMFLOW_STORAGE_SPOOL": "/var/spool/dicomflow"})
    assert s.storage.spool == Path("/var/spool/dicomflow")
    assert from_child_env(to_child_env(s)) == s
