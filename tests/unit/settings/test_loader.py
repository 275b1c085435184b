"""Settings: TOML, the reference's application.json, environment, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicomflow.errors import ConfigError
from dicomflow.settings import DeprecatedSettingWarning, Settings, as_dict, load_settings, tenant_tag


def test_defaults_describe_the_local_stack() -> None:
    s = load_settings()
    assert s == Settings()
    assert s.kafka.brokers == "127.0.0.1:19092"
    assert s.topics.main == "storage_queue" and s.topics.dlq == "storage_queue.dlq"
    assert s.consumer.batch_max_messages == 500 and s.consumer.batch_max_ms == 500


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text(
        '[kafka]\nbrokers = "k1:9092,k2:9092"\ncompression_codec = "zstd"\n'
        '[kafka.client]\n"security.protocol" = "SASL_SSL"\n"sasl.password" = "hunter2"\n'
        '[receiver]\nallowed_calling_aes = ["CT1", "MR1"]\n[ingest.ae_tenants]\nCT1 = "hospital-a"\n'
        '[storage]\nroot = "/srv/dicom"\n'
    )
    s = load_settings(path)
    assert s.kafka.brokers == "k1:9092,k2:9092"
    assert s.kafka.compression_codec == "zstd"
    assert s.kafka.client["security.protocol"] == "SASL_SSL"
    assert s.receiver.allowed_calling_aes == ("CT1", "MR1")
    assert s.ingest.ae_tenants["CT1"] == "hospital-a"
    assert s.storage.root == Path("/srv/dicom")


def test_the_receiver_at_the_edge_from_toml_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text(
        '[receiver]\nmax_dataset_bytes = 1048576\nidle_timeout_s = 5\nrequire_user_identity = true\n'
        'users_file = "/etc/dicomflow/users"\n'
        '[receiver.tls]\ncert_file = "/etc/tls/r.pem"\nkey_file = "/etc/tls/r.key"\nport = 2762\n'
        '[ingest]\nduplicates = "keep"\n'
    )
    s = load_settings(path, {"DICOMFLOW_RECEIVER_TLS_CA_FILE": "/etc/tls/ca.pem",
                             "DICOMFLOW_RECEIVER_TLS_HANDSHAKE_TIMEOUT_S": "2.5"})
    tls = s.receiver.tls
    assert (tls.cert_file, tls.key_file, tls.ca_file) == (Path("/etc/tls/r.pem"), Path("/etc/tls/r.key"),
                                                          Path("/etc/tls/ca.pem"))
    assert tls.enabled and tls.port == 2762 and tls.handshake_timeout_s == 2.5
    assert s.receiver.max_dataset_bytes == 1048576 and s.receiver.idle_timeout_s == 5.0
    assert s.receiver.require_user_identity and s.receiver.users_file == Path("/etc/dicomflow/users")
    assert s.ingest.duplicates == "keep"
    assert Settings().receiver.tls.enabled is False and Settings().ingest.duplicates == "reject"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[receiver.tls]\ncert_file = "/c.pem"\n', "receiver.tls.key_file"),
        ('[receiver.tls]\nca_file = "/ca.pem"\n', "receiver.tls.ca_file"),
        ('[receiver.tls]\nbogus = 1\n', "receiver.tls.bogus"),
        ("[receiver]\nrequire_user_identity = true\n", "receiver.users_file"),
        ('[ingest]\nduplicates = "overwrite"\n', "ingest.duplicates"),
        ("[receiver]\nmax_dataset_bytes = 10\n", "receiver.max_dataset_bytes"),
    ],
)
def test_the_edge_settings_are_checked(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key


def test_reference_application_json(tmp_path: Path) -> None:
    path = tmp_path / "application.json"
    path.write_text(json.dumps({
        "kafka": {"brokers": "192.0.2.1:9092", "queue_buffering_max_messages": 5000, "linger_ms": 20,
                  "compression_codec": "lz4", "batch_num_messages": 100},
        "message_queue": {"topic_main": "main_q", "topic_log": "log_q", "topic_dicom_state": "state_q",
                          "topic_dicom_image": "image_q", "consumer_group_id": "wado"},
        "main_database": {"dbtype": "postgresql", "url": "postgresql://u:secret@db:5432/pacs"},
        "redis": {"url": "redis://x"},
    }))
    s = load_settings(path)
    assert s.kafka.brokers == "192.0.2.1:9092"
    assert s.kafka.queue_buffering_max_messages == 5000
    assert s.kafka.linger_ms == 20 and s.kafka.compression_codec == "lz4"
    assert (s.topics.main, s.topics.log, s.topics.dicom_state, s.topics.dicom_image) == ("main_q", "log_q", "state_q", "image_q")
    assert s.topics.consumer_group_id == "wado"
    assert s.database.conninfo() == "postgresql://u:secret@db:5432/pacs"


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text('[kafka]\nbrokers = "from-file:9092"\n')
    env = {"DICOMFLOW_KAFKA_BROKERS": "from-env:9092", "DICOMFLOW_CONSUMER_BATCH_MAX_MESSAGES": "50",
           "DICOMFLOW_INGEST_FSYNC": "false", "DICOMFLOW_RECEIVER_ALLOWED_CALLING_AES": "A,B", "PATH": "/bin"}
    s = load_settings(path, env)
    assert s.kafka.brokers == "from-env:9092"
    assert s.consumer.batch_max_messages == 50
    assert s.ingest.fsync is False
    assert s.receiver.allowed_calling_aes == ("A", "B")


def test_bad_value_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text("[consumer]\nbatch_max_messages = \"lots\"\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "consumer.batch_max_messages"
    assert info.value.source == str(path)
    assert "expected an integer" in str(info.value)


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"DICOMFLOW_KAFKA_COMPRESSION_CODEC": "brotli"})
    assert "DICOMFLOW_KAFKA_COMPRESSION_CODEC" in str(info.value)
    assert "snappy" in str(info.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [("[kafka]\nbrokerz = 1\n", "kafka.brokerz"), ("[nope]\nx = 1\n", "nope.x"),
     ("[consumer]\nbatch_max_messages = 0\n", "consumer.batch_max_messages"),
     ("[ingest]\ntenant_tag = \"zz\"\n", "ingest.tenant_tag")],
)
def test_unknown_or_out_of_range_keys_rejected(tmp_path: Path, text: str, key: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == key


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[kafka\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_secrets_are_masked() -> None:
    s = load_settings(None, overrides={"database.dsn": "postgresql://u:topsecret@db/pacs",
                                       "kafka.client": {"sasl.password": "pw", "sasl.username": "me"}})
    shown = json.dumps(as_dict(s))
    assert "topsecret" not in shown and '"pw"' not in shown
    assert as_dict(s)["kafka"]["client"] == {"sasl.password": "***", "sasl.username": "me"}
    assert as_dict(s)["database"]["password"] == "***"
    assert as_dict(s, mask_secrets=False)["database"]["dsn"] == "postgresql://u:topsecret@db/pacs"


def test_tenant_tag_parses_to_pydicom_int() -> None:
    assert tenant_tag(load_settings().ingest) == 0x12111217


def test_the_old_receiver_keys_still_work_with_a_warning_naming_both_keys_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text(
        '[receiver]\nport = 11113\nfsync = false\ntenant_tag = "0011,1010"\n'
        'supported_transfer_syntaxes = ["1.2.840.10008.1.2.1"]\n[receiver.ae_tenants]\nCT1 = "hospital-a"\n'
    )
    with pytest.warns(DeprecatedSettingWarning) as caught:
        s = load_settings(path)
    messages = sorted(str(w.message) for w in caught)
    assert messages == sorted(f"{path}: receiver.{key} is deprecated; use ingest.{key}"
                              for key in ("fsync", "tenant_tag", "supported_transfer_syntaxes", "ae_tenants"))
    assert s.ingest.fsync is False and s.ingest.tenant_tag == "0011,1010"
    assert s.ingest.supported_transfer_syntaxes == ("1.2.840.10008.1.2.1",)
    assert dict(s.ingest.ae_tenants) == {"CT1": "hospital-a"}
    assert s.receiver.port == 11113


def test_the_old_receiver_variables_still_work_with_a_warning_naming_both_variables() -> None:
    env = {"DICOMFLOW_RECEIVER_FSYNC": "false", "DICOMFLOW_RECEIVER_AE_TENANTS": '{"MR1": "hospital-b"}'}
    with pytest.warns(DeprecatedSettingWarning) as caught:
        s = load_settings(None, env)
    assert sorted(str(w.message) for w in caught) == [
        "environment variable DICOMFLOW_RECEIVER_AE_TENANTS: receiver.ae_tenants is deprecated; "
        "use ingest.ae_tenants (DICOMFLOW_INGEST_AE_TENANTS)",
        "environment variable DICOMFLOW_RECEIVER_FSYNC: receiver.fsync is deprecated; "
        "use ingest.fsync (DICOMFLOW_INGEST_FSYNC)",
    ]
    assert s.ingest.fsync is False and dict(s.ingest.ae_tenants) == {"MR1": "hospital-b"}


def test_a_new_key_wins_over_its_old_one_in_the_same_source_and_a_later_source_wins(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text('[receiver]\ntenant_tag = "0011,1010"\n[ingest]\ntenant_tag = "0013,1013"\n')
    with pytest.warns(DeprecatedSettingWarning, match=r"receiver\.tenant_tag is deprecated and ignored here"):
        s = load_settings(path)
    assert s.ingest.tenant_tag == "0013,1013"
    with pytest.warns(DeprecatedSettingWarning) as caught:
        s = load_settings(path, {"DICOMFLOW_RECEIVER_TENANT_TAG": "0015,1015"})
    assert s.ingest.tenant_tag == "0015,1015"  # the environment comes after the file, even under its old name
    assert any(str(w.message).startswith("environment variable DICOMFLOW_RECEIVER_TENANT_TAG: ") for w in caught)


def test_a_bad_value_under_an_old_key_is_reported_where_it_was_written(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text('[receiver]\nfsync = "sometimes"\n')
    with pytest.warns(DeprecatedSettingWarning), pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.source == str(path) and "expected true or false" in str(info.value)
    assert [key for key in ("fsync", "tenant_tag", "ae_tenants", "supported_transfer_syntaxes")
            if hasattr(Settings().receiver, key)] == []  # gone from [receiver]: only the loader knows the old keys


def test_the_cli_says_which_key_moved_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text("[receiver]\nfsync = false\n")
    proc = subprocess.run([sys.executable, "-m", "dicomflow.cli", "--config", str(path), "config", "show"],
                          capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["ingest"]["fsync"] is False
    assert proc.stderr.strip() == f"warning: {path}: receiver.fsync is deprecated; use ingest.fsync"


def test_config_show_cli(tmp_path: Path) -> None:
    path = tmp_path / "dicomflow.toml"
    path.write_text('[database]\npassword = "s3cret"\n[topics]\nmain = "q1"\n')
    out = subprocess.run([sys.executable, "-m", "dicomflow.cli", "--config", str(path), "config", "show"],
                         capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    assert data["topics"]["main"] == "q1"
    assert data["database"]["password"] == "***"
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka]\nlinger_ms = -x\n")
    proc = subprocess.run([sys.executable, "-m", "dicomflow.cli", "--config", str(bad), "config", "show"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert str(bad) in proc.stderr


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run([sys.executable, "-m", "dicomflow.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("config", "stack"):
        assert command in out
