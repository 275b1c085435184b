"""One typed, frozen settings object, built once by the CLI and passed in.

Sources, later wins:

1. built-in defaults (a local single-node stack under ``.dicomflow/``);
2. a TOML file (``dicomflow.toml``) with one table per section below;
3. the reference services' ``application.json`` layout (``kafka.brokers``,
   ``message_queue.topic_main``, ``message_queue.consumer_group_id`` ...),
   accepted in either file format so an existing deployment's config works;
4. ``DICOMFLOW_<SECTION>_<KEY>`` environment variables
   (``DICOMFLOW_KAFKA_BROKERS=host:9092``).

Library code never reads the environment or a file: :func:`load_settings` is
called by the CLI (and by tests) and the result flows into each component.
A bad value raises :class:`~dicomflow.errors.ConfigError` naming the key and
the file (or variable) it came from.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from dicomflow.errors import ConfigError

Compression = Literal["snappy", "lz4", "zstd", "gzip", "none"]

#: Transfer syntaxes the archive serves without transcoding (transfer_status NoNeedTransfer).
DEFAULT_SUPPORTED_TS: tuple[str, ...] = (
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired)
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


@dataclass(frozen=True)
class KafkaSettings:
    """Client settings shared by every producer, consumer and admin client."""

    brokers: str = "127.0.0.1:19092"
    compression_codec: Compression = "snappy"
    linger_ms: int = 5
    batch_num_messages: int = 10000
    batch_size: int = 1048576
    queue_buffering_max_messages: int = 200000
    queue_buffering_max_kbytes: int = 1048576
    message_timeout_ms: int = 30000
    request_timeout_ms: int = 10000
    retry_backoff_ms: int = 100
    retry_backoff_max_ms: int = 1000
    #: Extra librdkafka properties passed through verbatim (security.protocol,
    #: sasl.mechanism, sasl.username, sasl.password, ssl.ca.location ...).
    client: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicSettings:
    """Topic names (defaults as in the reference) and how topics are created."""

    main: str = "storage_queue"
    log: str = "log_queue"
    dicom_state: str = "dicom_state_queue"
    dicom_image: str = "dicom_image_queue"
    audit: str = "audit_queue"
    dlq: str = "storage_queue.dlq"
    consumer_group_id: str = "wado-consumer"
    partitions: int = 6
    replication_factor: int = 1
    retention_ms: int = 7 * 24 * 3600 * 1000

    def all(self) -> tuple[str, ...]:
        """Every topic dicomflow reads or writes, for creation and listing (dead-letter topics included)."""
        names = (self.main, self.log, self.dicom_state, self.dicom_image, self.audit, self.dlq,
                 *self.warehouse_dead_letter_topics())
        return tuple(dict.fromkeys(names))

    def warehouse_dead_letter_topics(self) -> tuple[str, ...]:
        """Where the warehouse sink dead-letters: ``<topic>.dlq`` of each topic it reads.

        Created with the others so that a poison message never depends on the
        broker auto-creating a topic (off on most production clusters, and a
        topic created that way gets the broker's defaults, not these settings).
        """
        return tuple(f"{t}.dlq" for t in (self.log, self.dicom_state, self.dicom_image, self.audit))


@dataclass(frozen=True)
class DatabaseSettings:
    """PostgreSQL connection; ``dsn`` wins over the individual fields when set."""

    dsn: str = ""
    host: str = "127.0.0.1"
    port: int = 15432
    dbname: str = "dicomflow"
    user: str = "dicomflow"
    password: str = "dicomflow"
    pool_min: int = 1
    pool_max: int = 4
    connect_timeout_s: int = 5

    def conninfo(self) -> str:
        """A libpq connection string for psycopg."""
        if self.dsn:
            return self.dsn
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            connect_timeout=self.connect_timeout_s,
            application_name="dicomflow",
        )


@dataclass(frozen=True)
class ConsumerSettings:
    """The WADO-consumer: batching, parsing, retries."""

    batch_max_messages: int = 500
    batch_max_ms: int = 500
    #: Parse worker processes; 0 means one per CPU core.
    parse_workers: int = 0
    retry_initial_ms: int = 200
    retry_max_ms: int = 10000
    session_timeout_ms: int = 10000
    max_poll_interval_ms: int = 300000


@dataclass(frozen=True)
class StorageSettings:
    """Where instance files live; store events pointing elsewhere are rejected."""

    root: Path = Path(".dicomflow/storage")
    default_tenant: str = "default"


@dataclass(frozen=True)
class ReceiverSettings:
    """The C-STORE SCP."""

    ae_title: str = "DICOMFLOW"
    host: str = "127.0.0.1"
    port: int = 11112
    #: Calling AE titles allowed to associate; empty means any.
    allowed_calling_aes: tuple[str, ...] = ()
    #: Private tag holding the tenant id, as "GGGG,EEEE" (the reference uses 1211,1217).
    tenant_tag: str = "1211,1217"
    #: Calling AE title -> tenant id, used when the tenant tag is absent.
    ae_tenants: Mapping[str, str] = field(default_factory=dict)
    supported_transfer_syntaxes: tuple[str, ...] = DEFAULT_SUPPORTED_TS
    fsync: bool = True
    #: Receiver processes sharing the port (SO_REUSEPORT) to use every core.
    processes: int = 1
    max_associations: int = 32
    #: Seconds to wait for Kafka's acknowledgement before answering a failure.
    publish_timeout_s: float = 10.0
    #: linger.ms of the receiver's producer (overrides kafka.linger_ms there):
    #: each C-STORE waits for its own acknowledgement, so lingering is pure latency.
    kafka_linger_ms: int = 0
    #: DICOM network layer: "native" (dicomflow's own acceptor, fast) or "pynetdicom".
    engine: Literal["native", "pynetdicom"] = "native"


@dataclass(frozen=True)
class StackSettings:
    """The local development / test stack (Kafka from Maven Central, Debian PostgreSQL)."""

    dir: Path = Path(".dicomflow")
    kafka_version: str = "4.1.1"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap_mb: int = 512
    postgres_port: int = 15432
    #: Also run a local ClickHouse server (``stack up --clickhouse`` does it once);
    #: off by default so the demo and most tests stay lean.
    clickhouse: bool = False
    clickhouse_http_port: int = 18123
    clickhouse_tcp_port: int = 19000


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics and the health endpoint (port 0 disables them)."""

    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True)
class WarehouseSettings:
    """The analytics warehouse: the embedded DuckDB sink (``dicomflow warehouse run``)."""

    #: The DuckDB file the sink writes (one writing process at a time).
    path: Path = Path(".dicomflow/warehouse.duckdb")
    #: The sink's own consumer group (its Kafka commits are informational:
    #: the offsets that count live in the DuckDB file).
    group_id: str = "dicomflow-warehouse"
    #: Seconds between read-only snapshots for readers (0 disables them).
    snapshot_interval_s: float = 10.0
    #: The snapshot file; empty means ``<path stem>.snapshot.duckdb`` beside ``path``.
    snapshot_path: str = ""
    batch_max_messages: int = 20000
    batch_max_ms: int = 1000
    #: DuckDB worker threads; 0 lets DuckDB decide (one per core).
    threads: int = 0

    def snapshot_file(self) -> Path:
        """Where readers find the latest consistent snapshot."""
        if self.snapshot_path:
            return Path(self.snapshot_path)
        return self.path.with_name(self.path.stem + ".snapshot.duckdb")


@dataclass(frozen=True)
class ClickHouseSettings:
    """ClickHouse as a warehouse: what ``warehouse ddl --target clickhouse`` generates."""

    #: Database the tables are created in.
    database: str = "dicomflow"
    #: Brokers as ClickHouse reaches them; empty means ``kafka.brokers``.
    brokers: str = ""
    #: Consumer groups are ``<group_prefix>_<object|state|image|audit>_group``
    #: (the reference's ``medical_object_group`` ...).
    group_prefix: str = "medical"
    #: Kafka-engine consumers per topic (at most the topic's partitions).
    num_consumers: int = 1
    #: Messages a block may skip as unparseable (current syntax only; 18.x
    #: lacks the setting, see the legacy notes in the DDL header).
    skip_broken_messages: int = 1000
    #: The HTTP interface ``dicomflow report --clickhouse`` reads by default.
    url: str = "http://127.0.0.1:18123"


@dataclass(frozen=True)
class DorisSettings:
    """Apache Doris as a warehouse: what ``warehouse ddl --target doris`` generates."""

    database: str = "dicomflow"
    #: Brokers as Doris reaches them; empty means ``kafka.brokers``.
    brokers: str = ""
    #: ``property.group.id`` of the routine loads: ``<group_prefix>_<object|state|image|audit>_group``.
    group_prefix: str = "medical"
    replication_num: int = 3
    buckets: int = 10
    #: Rows a routine load may reject per window before it pauses.
    max_error_number: int = 1000
    max_batch_interval_s: int = 10
    #: Monthly dynamic partitions pre-created back in time (study dates are
    #: historical: old studies arrive every day); older dates go to one catch-all partition.
    history_partitions: int = 480
    future_partitions: int = 3


@dataclass(frozen=True)
class Settings:
    """Everything dicomflow can be told, in one frozen object."""

    worker_node_id: str = "dicomflow-1"
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    topics: TopicSettings = field(default_factory=TopicSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    doris: DorisSettings = field(default_factory=DorisSettings)


#: The reference's application.json keys, mapped onto ours.
REFERENCE_KEYS: dict[str, tuple[str, str]] = {
    "kafka.brokers": ("kafka", "brokers"),
    "kafka.queue_buffering_max_messages": ("kafka", "queue_buffering_max_messages"),
    "kafka.queue_buffering_max_kbytes": ("kafka", "queue_buffering_max_kbytes"),
    "kafka.queue_buffering_max_ms": ("kafka", "linger_ms"),
    "kafka.batch_num_messages": ("kafka", "batch_num_messages"),
    "kafka.linger_ms": ("kafka", "linger_ms"),
    "kafka.compression_codec": ("kafka", "compression_codec"),
    "message_queue.topic_main": ("topics", "main"),
    "message_queue.topic_log": ("topics", "log"),
    "message_queue.topic_dicom_state": ("topics", "dicom_state"),
    "message_queue.topic_dicom_image": ("topics", "dicom_image"),
    "message_queue.topic_audit": ("topics", "audit"),
    "message_queue.consumer_group_id": ("topics", "consumer_group_id"),
    "main_database.url": ("database", "dsn"),
    "main_database.dsn": ("database", "dsn"),
    "consumer.max_messages_per_batch": ("consumer", "batch_max_messages"),
    "consumer.max_time_between_batches_ms": ("consumer", "batch_max_ms"),
}

_SECRET_WORDS = ("password", "secret", "sasl.password", "ssl.key.password", "token")


def _sections() -> dict[str, type]:
    hints = get_type_hints(Settings)
    return {f.name: hints[f.name] for f in dataclasses.fields(Settings) if dataclasses.is_dataclass(hints[f.name])}


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Convert a raw TOML/JSON/env value to the annotated type, or say why not."""
    origin = get_origin(tp)
    from_env = isinstance(value, str) and source.startswith("environment")
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                return value.lower() in ("1", "true", "yes", "on")
            raise ValueError(f"expected true or false, got {value!r}")
        if tp is int:
            if isinstance(value, bool):
                raise ValueError(f"expected an integer, got {value!r}")
            if isinstance(value, int):
                return value
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                return int(value)
            raise ValueError(f"expected an integer, got {value!r}")
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                return float(value)
            raise ValueError(f"expected a number, got {value!r}")
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            raise ValueError(f"expected a string, got {value!r}")
        if tp is Path:
            if isinstance(value, str):
                return Path(value)
            raise ValueError(f"expected a path string, got {value!r}")
        if origin is Literal:
            allowed = get_args(tp)
            if value in allowed:
                return value
            raise ValueError(f"expected one of {', '.join(map(str, allowed))}; got {value!r}")
        if origin is tuple:
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()] if from_env else [value]
            if not isinstance(value, list):
                raise ValueError(f"expected a list, got {value!r}")
            return tuple(_coerce(v, get_args(tp)[0], key, source) for v in value)
        if origin in (Mapping, dict, typing.Mapping) or tp is dict:
            if isinstance(value, str) and from_env:
                value = json.loads(value)
            if not isinstance(value, dict):
                raise ValueError(f"expected a table of strings, got {value!r}")
            return types.MappingProxyType({str(k): str(v) for k, v in value.items()})
    except (ValueError, json.JSONDecodeError) as exc:
        raise ConfigError(key, source, str(exc)) from exc
    raise ConfigError(key, source, f"unsupported setting type {tp!r}")


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict) and name not in ("kafka.client", "receiver.ae_tenants"):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def _apply(
    overrides: dict[str, dict[str, Any]], flat: Mapping[str, Any], source: str
) -> None:
    """Validate ``section.key`` values from one source into ``overrides``."""
    sections = _sections()
    top_hints = get_type_hints(Settings)
    for dotted, raw in flat.items():
        section, key = REFERENCE_KEYS.get(dotted, (None, None)) or (None, None)
        if section is None:
            if "." not in dotted:
                if dotted == "worker_node_id":
                    overrides.setdefault("", {})[dotted] = _coerce(raw, top_hints[dotted], dotted, source)
                    continue
                raise ConfigError(dotted, source, "unknown setting")
            section, key = dotted.split(".", 1)
        if section not in sections:
            # Reference sections we do not use (log, redis, storage paths ...) are tolerated.
            if section in ("main_database", "message_queue", "log", "redis", "server", "dicom_store"):
                continue
            raise ConfigError(dotted, source, f"unknown section {section!r}")
        hints = get_type_hints(sections[section])
        if key not in hints:
            raise ConfigError(dotted, source, f"unknown key {key!r} in [{section}]")
        overrides.setdefault(section, {})[key] = _coerce(raw, hints[key], dotted, source)


def _read_file(path: Path) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("<file>", source, f"cannot read: {exc.strerror}") from exc
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("<syntax>", source, str(exc)) from exc
    if not isinstance(data, dict):
        raise ConfigError("<root>", source, "expected a table / object at the top level")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    flat: dict[str, str] = {}
    sections = _sections()
    for name, value in env.items():
        if not name.startswith("DICOMFLOW_") or name == "DICOMFLOW_CONFIG":
            continue
        rest = name[len("DICOMFLOW_"):].lower()
        if rest == "worker_node_id":
            flat[rest] = value
            continue
        section, _, key = rest.partition("_")
        if section in sections and key:
            flat[f"{section}.{key}"] = value
        else:
            raise ConfigError(name, "environment", "unknown setting")
    return flat


def load_settings(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from defaults, an optional file, environment and overrides.

    ``env`` is passed in (the CLI passes ``os.environ``) so that nothing here
    depends on the process environment by surprise. ``overrides`` are dotted
    keys (``{"kafka.brokers": "..."}``), used by tests and CLI options.

    Raises:
        ConfigError: naming the key and the file or variable it came from.
    """
    collected: dict[str, dict[str, Any]] = {}
    if path is not None:
        _apply(collected, _flatten(_read_file(path)), str(path))
    if env is not None:
        for dotted, raw in _env_overrides(env).items():
            var = "DICOMFLOW_" + dotted.replace(".", "_").upper()
            _apply(collected, {dotted: raw}, f"environment variable {var}")
    if overrides:
        _apply(collected, dict(overrides), "override")
    return _build(collected)


def _build(collected: dict[str, dict[str, Any]]) -> Settings:
    sections = _sections()
    kwargs: dict[str, Any] = dict(collected.get("", {}))
    for name, cls in sections.items():
        kwargs[name] = cls(**collected.get(name, {}))
    settings = Settings(**kwargs)
    _validate(settings)
    return settings


def _validate(s: Settings) -> None:
    """Cross-field and range checks that a type alone cannot express."""
    checks: list[tuple[bool, str, str]] = [
        (s.consumer.batch_max_messages >= 1, "consumer.batch_max_messages", "must be at least 1"),
        (s.consumer.batch_max_ms >= 1, "consumer.batch_max_ms", "must be at least 1"),
        (s.consumer.parse_workers >= 0, "consumer.parse_workers", "must be 0 (one per core) or more"),
        (s.topics.partitions >= 1, "topics.partitions", "must be at least 1"),
        (s.topics.replication_factor >= 1, "topics.replication_factor", "must be at least 1"),
        (0 < s.receiver.port < 65536, "receiver.port", "must be a TCP port"),
        (s.receiver.processes >= 1, "receiver.processes", "must be at least 1"),
        (len(s.receiver.ae_title.encode()) <= 16 and s.receiver.ae_title.strip() != "", "receiver.ae_title", "must be 1-16 characters"),
        (bool(s.kafka.brokers.strip()), "kafka.brokers", "must not be empty"),
        (_is_tag(s.receiver.tenant_tag), "receiver.tenant_tag", "must be a tag like 1211,1217"),
        (s.warehouse.batch_max_messages >= 1, "warehouse.batch_max_messages", "must be at least 1"),
        (s.warehouse.batch_max_ms >= 1, "warehouse.batch_max_ms", "must be at least 1"),
        (s.warehouse.snapshot_interval_s >= 0, "warehouse.snapshot_interval_s", "must be 0 (off) or more"),
        (s.warehouse.threads >= 0, "warehouse.threads", "must be 0 (DuckDB decides) or more"),
        (bool(s.warehouse.group_id.strip()), "warehouse.group_id", "must not be empty"),
    ]
    for ok, key, problem in checks:
        if not ok:
            raise ConfigError(key, "settings", problem)


def _is_tag(text: str) -> bool:
    parts = text.replace("(", "").replace(")", "").split(",")
    try:
        return len(parts) == 2 and all(0 <= int(p, 16) <= 0xFFFF for p in parts)
    except ValueError:
        return False


def tenant_tag(settings: ReceiverSettings) -> int:
    """The tenant private tag as the integer pydicom uses (0x12111217)."""
    group, elem = settings.tenant_tag.replace("(", "").replace(")", "").split(",")
    return (int(group, 16) << 16) | int(elem, 16)


def as_dict(settings: Settings, mask_secrets: bool = True) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``***``."""

    def convert(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return {f.name: convert(getattr(obj, f.name), f.name) for f in dataclasses.fields(obj)}
        if isinstance(obj, Mapping):
            return {str(k): ("***" if mask_secrets and _is_secret(str(k)) and v else convert(v)) for k, v in obj.items()}
        if isinstance(obj, Path):
            return str(obj)
        if isinstance(obj, tuple):
            return [convert(v) for v in obj]
        if mask_secrets and _is_secret(key) and obj:
            return "***"
        if mask_secrets and key == "dsn" and obj:
            return _mask_dsn(str(obj))
        return obj

    result = convert(settings)
    assert isinstance(result, dict)
    return result


def _is_secret(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _mask_dsn(dsn: str) -> str:
    """Hide a password inside a URL or key=value DSN."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)(\S+)", r"\1***", dsn)


def default_config_path(env: Mapping[str, str]) -> Path | None:
    """The config file the CLI uses: ``$DICOMFLOW_CONFIG`` or ``./dicomflow.toml`` if present."""
    explicit = env.get("DICOMFLOW_CONFIG")
    if explicit:
        return Path(explicit)
    local = Path("dicomflow.toml")
    return local if local.exists() else None


__all__ = [
    "Compression",
    "ClickHouseSettings",
    "ConsumerSettings",
    "DatabaseSettings",
    "DorisSettings",
    "KafkaSettings",
    "MetricsSettings",
    "ReceiverSettings",
    "Settings",
    "StackSettings",
    "StorageSettings",
    "TopicSettings",
    "WarehouseSettings",
    "as_dict",
    "default_config_path",
    "load_settings",
    "tenant_tag",
]

