"""The settings schema: one frozen dataclass per section, and :class:`Settings` holding them all.

Imported by every stage and importing none of them (nor the loader or the export: this module only
says what the settings are). How the values are read (defaults, TOML, ``application.json``,
environment) is :mod:`.loader`; how they are shown or handed to a child process is :mod:`.export`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from dicomflow.settings.lifecycle import LifecycleSettings
from dicomflow.settings.qr import QrSettings
from dicomflow.settings.storage import StorageS3Settings, StorageSettings
from dicomflow.settings.warehouse import ClickHouseSettings, DorisSettings, WarehouseSettings
from dicomflow.settings.web import ImagesSettings, OAuth2Settings, ViewerSettings, WebSettings

Compression = Literal["snappy", "lz4", "zstd", "gzip", "none"]
#: libpq's sslmode values; "" means "not set" (libpq's default, prefer).
SslMode = Literal["", "disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

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
    change: str = "dicom_change_queue"  # change events (issue 20, docs/lifecycle.md)
    #: Compacted topic recording every re-driven dead letter (key: letter ID), so none is re-driven twice.
    redrive_ledger: str = "dicomflow.dlq.redriven"
    consumer_group_id: str = "wado-consumer"
    partitions: int = 6
    #: Replicas per partition; 0 derives it from the cluster: 3 on three brokers or more, else the broker count.
    replication_factor: int = 0
    #: ``min.insync.replicas`` of each topic; 0 derives it: replication factor - 1 (2 for 3), at least 1.
    min_insync_replicas: int = 0
    retention_ms: int = 7 * 24 * 3600 * 1000

    def all(self) -> tuple[str, ...]:
        """Every topic dicomflow reads or writes, for creation and listing (dead-letter topics included)."""
        names = (self.main, self.log, self.dicom_state, self.dicom_image, self.audit, self.dlq, self.change,
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
    connect_timeout_s: int = 5
    #: libpq ``sslmode``; "" leaves libpq's default (prefer). Production: "verify-full" (TLS, the
    #: server's certificate signed by ``sslrootcert`` and issued for ``host``).
    sslmode: SslMode = ""
    #: CA certificate(s) the server's certificate must chain to (PEM file).
    sslrootcert: str = ""
    #: Client certificate and key, for servers that authenticate clients by certificate.
    sslcert: str = ""
    sslkey: str = ""

    def tls(self) -> dict[str, str]:
        """The TLS parameters that are set (they apply to ``dsn`` too, overriding it)."""
        fields = {"sslmode": self.sslmode, "sslrootcert": self.sslrootcert, "sslcert": self.sslcert, "sslkey": self.sslkey}
        return {k: v for k, v in fields.items() if v}

    def conninfo(self) -> str:
        """A libpq connection string for psycopg."""
        from psycopg.conninfo import make_conninfo

        if self.dsn:
            return make_conninfo(self.dsn, **self.tls()) if self.tls() else self.dsn
        return make_conninfo(
            host=self.host,
            port=self.port,
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            connect_timeout=self.connect_timeout_s,
            application_name="dicomflow",
            **self.tls(),
        )


@dataclass(frozen=True)
class ConsumerSettings:
    """The WADO-consumer: batching, parsing, retries."""

    batch_max_messages: int = 500
    batch_max_ms: int = 500
    #: Parse worker processes; 0 means one per CPU core.
    parse_workers: int = 0
    #: Backoff of a failed batch, doubling up to retry_max_ms; the warehouse sink and the
    #: image workers retry with the same (the consumer loops share one retry: kafka/retry.py).
    retry_initial_ms: int = 200
    retry_max_ms: int = 10000
    session_timeout_ms: int = 10000
    max_poll_interval_ms: int = 300000
    #: Longest wait for the group coordinator to confirm an offset commit; after it the
    #: batch's commit is retried with backoff while the loop keeps polling.
    commit_timeout_ms: int = 5000


@dataclass(frozen=True)
class TlsSettings:
    """DICOM TLS for the receiver (PS3.15 Annex B, BCP 195 profile): on when cert_file is set."""

    #: PEM certificate (chain) the receiver presents; TLS is off while unset.
    cert_file: Path | None = None
    #: PEM private key of cert_file (unencrypted; keep it 0600).
    key_file: Path | None = None
    #: PEM CA certificate(s) a client certificate must chain to: set = mutual TLS (required).
    ca_file: Path | None = None
    #: 0: the main port (receiver.port) speaks TLS instead of plain TCP; another port: a TLS listener beside the plain one.
    port: int = 0
    #: Seconds a new connection has to complete the TLS handshake.
    handshake_timeout_s: float = 10.0

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


@dataclass(frozen=True)
class ReceiverSettings:
    """The C-STORE SCP."""

    ae_title: str = "DICOMFLOW"
    host: str = "127.0.0.1"
    port: int = 11112
    #: Calling AE titles allowed to associate; empty means any.
    allowed_calling_aes: tuple[str, ...] = ()
    #: Receiver processes behind the port, to use every core: one dispatcher accepts
    #: and hands each connection to a worker process (receiver/workers.py).
    processes: int = 1
    max_associations: int = 32
    #: Seconds to wait for Kafka's acknowledgement before answering a failure.
    publish_timeout_s: float = 10.0
    #: When a C-STORE is answered Success: "kafka" once the file is durable and Kafka
    #: acknowledged its store event; "journal" once the file and a record of its store
    #: event in the receiver's local journal ({storage root}/.journal) are durable, the
    #: event then published from the journal at least once (docs/receiver.md).
    ack: Literal["kafka", "journal"] = "kafka"
    #: With ack = "journal", how a group commit makes its instances durable: "filesystem"
    #: (Linux: one syncfs of the storage root's file system for the files, names and
    #: records of the whole group) or "files" (an fdatasync per file, one fsync per
    #: folder and one fdatasync of the journal per group); "files" where other programs
    #: write much to the same file system (syncfs writes their data too).
    journal_sync: Literal["filesystem", "files"] = "filesystem"
    #: linger.ms of the receiver's producer (overrides kafka.linger_ms there):
    #: each C-STORE waits for its own acknowledgement, so lingering is pure latency.
    kafka_linger_ms: int = 0
    #: DICOM network layer: "native" (dicomflow's own acceptor, fast) or "pynetdicom".
    engine: Literal["native", "pynetdicom"] = "native"
    #: Associations at once for the whole receiver (every --processes worker together).
    #: (max_associations is above.) Per calling AE title as well when > 0.
    max_associations_per_ae: int = 0
    #: Largest data set one C-STORE may carry; past it the association is aborted.
    max_dataset_bytes: int = 4 * 1024**3
    #: Seconds a new connection has to send its A-ASSOCIATE-RQ (PS3.8 ARTIM timer).
    artim_timeout_s: float = 30.0
    #: Seconds an established association may go without a complete PDU before it is aborted.
    idle_timeout_s: float = 120.0
    #: Longest one association may last, in seconds (0: no cap).
    max_association_s: float = 0.0
    tls: TlsSettings = field(default_factory=TlsSettings)
    #: Refuse an association that does not bring a valid username and password (PS3.7 D.3.3.7).
    require_user_identity: bool = False
    #: ``username:scrypt$N$r$p$salt$hash`` lines (``dicomflow users add``) the passwords are checked against.
    users_file: Path | None = None
    #: Benchmarks: time each instance's stages in the receiver and write them to this
    #: folder when it stops (metrics/stages.py, docs/receiver.md); None: off.
    stage_timing_dir: Path | None = None


@dataclass(frozen=True)
class IngestSettings:
    """Decisions every way in (C-STORE, ``publish --copy-into-storage``, STOW-RS) makes the same way.

    ``fsync``, ``tenant_tag``, ``ae_tenants`` and ``supported_transfer_syntaxes``
    were ``[receiver]`` keys: the loader still reads them there, with a
    :class:`~dicomflow.settings.loader.DeprecatedSettingWarning`.
    """

    #: Private tag holding the tenant id, as "GGGG,EEEE" (the reference uses 1211,1217).
    tenant_tag: str = "1211,1217"
    #: Calling AE title -> tenant id, used when the tenant tag is absent.
    ae_tenants: Mapping[str, str] = field(default_factory=dict)
    #: Transfer syntaxes served as received (transfer_status NoNeedTransfer); an instance
    #: in another one is stored as received and marked NeedTransfer (to Explicit VR LE).
    supported_transfer_syntaxes: tuple[str, ...] = DEFAULT_SUPPORTED_TS
    #: fdatasync each file and fsync its folder before Success (off: faster, a power cut
    #: may lose instances already acknowledged). The image workers' outputs follow it too.
    fsync: bool = True
    #: An instance whose SOP Instance UID is stored already with other content:
    #: "reject" (failure status / skipped, the stored copy stays), "replace"
    #: (atomically, a new store event), "keep" (Success, nothing changes).
    #: Identical content is always a Success that changes and publishes nothing.
    duplicates: Literal["reject", "replace", "keep"] = "reject"


@dataclass(frozen=True)
class StackSettings:
    """The local development / test stack (Kafka from Maven Central, Debian PostgreSQL)."""

    dir: Path = Path(".dicomflow")
    kafka_version: str = "4.1.1"
    #: The OHIF viewer (npm ``@ohif/app``) that ``stack up`` installs into ``<dir>/cache/ohif-<version>``.
    ohif_version: str = "3.13.2"
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap_mb: int = 512
    #: Kafka nodes of the local stack (combined KRaft broker + controller each); 1 is the default stack.
    kafka_brokers: int = 1
    #: Client port of each node of a cluster; empty: kafka_port, kafka_port + 2, ...
    kafka_ports: tuple[int, ...] = ()
    #: Controller port of each node of a cluster; empty: kafka_controller_port, kafka_controller_port + 2, ...
    kafka_controller_ports: tuple[int, ...] = ()
    #: Start the services with authentication and TLS (``stack up --secure``): Kafka SASL_SSL
    #: with SCRAM-SHA-512 users, PostgreSQL with TLS; certificates and passwords generated at start.
    secure: bool = False
    postgres_port: int = 15432
    #: Also run a local ClickHouse server (``stack up --clickhouse`` does it once);
    #: off by default so the demo and most tests stay lean.
    clickhouse: bool = False
    clickhouse_http_port: int = 18123
    clickhouse_tcp_port: int = 19000
    #: Also run a local S3Proxy, the S3 server of ``storage.backend = "s3"`` (``stack up --s3`` does it once).
    s3: bool = False
    s3_port: int = 19070


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics and the health endpoint (port 0 disables them)."""

    host: str = "127.0.0.1"
    port: int = 0


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
    ingest: IngestSettings = field(default_factory=IngestSettings)
    stack: StackSettings = field(default_factory=StackSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    web: WebSettings = field(default_factory=WebSettings)
    images: ImagesSettings = field(default_factory=ImagesSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    clickhouse: ClickHouseSettings = field(default_factory=ClickHouseSettings)
    doris: DorisSettings = field(default_factory=DorisSettings)
    lifecycle: LifecycleSettings = field(default_factory=LifecycleSettings)
    qr: QrSettings = field(default_factory=QrSettings)


def tenant_tag(settings: IngestSettings) -> int:
    """The tenant private tag as the integer pydicom uses (0x12111217)."""
    group, elem = settings.tenant_tag.replace("(", "").replace(")", "").split(",")
    return (int(group, 16) << 16) | int(elem, 16)


__all__ = [
    "DEFAULT_SUPPORTED_TS",
    "ClickHouseSettings",
    "Compression",
    "ConsumerSettings",
    "DatabaseSettings",
    "DorisSettings",
    "ImagesSettings",
    "IngestSettings",
    "KafkaSettings",
    "MetricsSettings",
    "OAuth2Settings",
    "ReceiverSettings",
    "Settings",
    "SslMode",
    "StackSettings",
    "StorageS3Settings",
    "StorageSettings",
    "TlsSettings",
    "TopicSettings",
    "ViewerSettings",
    "WarehouseSettings",
    "WebSettings",
    "tenant_tag",
]
