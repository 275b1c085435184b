"""The checks of a built :class:`~dicomflow.settings.schema.Settings` that its types cannot express: ranges and
settings that go together. Called by :mod:`.loader` once the sources are merged.
"""

from __future__ import annotations

from dicomflow.errors import ConfigError
from dicomflow.settings.derived import is_origin
from dicomflow.settings.lifecycle import lifecycle_checks
from dicomflow.settings.schema import Settings


def validate(s: Settings) -> None:
    """Cross-field and range checks that a type alone cannot express.

    Raises:
        ConfigError: the first setting that fails its check, naming it and the problem.
    """
    for ok, key, problem in [*_pipeline_checks(s), *_serving_checks(s), *lifecycle_checks(s.lifecycle)]:
        if not ok:
            raise ConfigError(key, "settings", problem)


Check = tuple[bool, str, str]


def _pipeline_checks(s: Settings) -> list[Check]:
    """Kafka, the consumer, the stack and the receiver: (ok, key, problem)."""
    return [
        (s.consumer.batch_max_messages >= 1, "consumer.batch_max_messages", "must be at least 1"),
        (s.consumer.batch_max_ms >= 1, "consumer.batch_max_ms", "must be at least 1"),
        (s.consumer.commit_timeout_ms >= 1, "consumer.commit_timeout_ms", "must be at least 1"),
        (s.consumer.parse_workers >= 0, "consumer.parse_workers", "must be 0 (one per core) or more"),
        (s.topics.partitions >= 1, "topics.partitions", "must be at least 1"),
        (s.topics.replication_factor >= 0, "topics.replication_factor", "must be 0 (derived from the cluster) or more"),
        (s.topics.min_insync_replicas >= 0, "topics.min_insync_replicas", "must be 0 (derived) or more"),
        (not (s.topics.replication_factor and s.topics.min_insync_replicas > s.topics.replication_factor),
         "topics.min_insync_replicas", "must not exceed topics.replication_factor"),
        (s.stack.kafka_brokers >= 1, "stack.kafka_brokers", "must be at least 1"),
        (0 < s.receiver.port < 65536, "receiver.port", "must be a TCP port"),
        (s.receiver.processes >= 1, "receiver.processes", "must be at least 1"),
        (s.receiver.max_associations >= 1, "receiver.max_associations", "must be at least 1"),
        (s.receiver.max_associations_per_ae >= 0, "receiver.max_associations_per_ae", "must be 0 (no limit) or more"),
        (s.receiver.max_dataset_bytes >= 1024, "receiver.max_dataset_bytes", "must be at least 1024"),
        (s.receiver.artim_timeout_s > 0, "receiver.artim_timeout_s", "must be positive"),
        (s.receiver.idle_timeout_s > 0, "receiver.idle_timeout_s", "must be positive"),
        (s.receiver.max_association_s >= 0, "receiver.max_association_s", "must be 0 (no cap) or positive"),
        (len(s.receiver.ae_title.encode()) <= 16 and s.receiver.ae_title.strip() != "", "receiver.ae_title", "must be 1-16 characters"),
        (bool(s.kafka.brokers.strip()), "kafka.brokers", "must not be empty"),
        (_is_tag(s.ingest.tenant_tag), "ingest.tenant_tag", "must be a tag like 1211,1217"),
    ]


def _serving_checks(s: Settings) -> list[Check]:
    """The web server, the image workers, TLS, the warehouse and the storage: (ok, key, problem)."""
    return [
        (0 < s.web.port < 65536, "web.port", "must be a TCP port"),
        (s.web.workers >= 1, "web.workers", "must be at least 1"),
        (s.web.max_stow_bytes >= 1, "web.max_stow_bytes", "must be at least 1"),
        (s.web.max_limit >= 1, "web.max_limit", "must be at least 1"),
        (s.web.db_pool_min >= 1, "web.db_pool_min", "must be at least 1"),
        (s.web.db_pool_max >= s.web.db_pool_min, "web.db_pool_max", "must be at least web.db_pool_min"),
        (s.web.db_wait_ms >= 1, "web.db_wait_ms", "must be at least 1"),
        *((getattr(s.web, k) >= 0, f"web.{k}", "must be 0 (none) or more") for k in ("metadata_cache_bytes", "thumbnail_cache_bytes")),
        (all(is_origin(o) for o in s.web.cors_origins), "web.cors_origins",
         "each must be an origin such as https://viewer.example (scheme://host[:port], no path, no *)"),
        (s.images.batch_max_messages >= 1, "images.batch_max_messages", "must be at least 1"),
        (16 <= s.images.thumbnail_size <= 1024, "images.thumbnail_size", "must be 16..1024"),
        ((s.receiver.tls.cert_file is None) == (s.receiver.tls.key_file is None), "receiver.tls.key_file",
         "cert_file and key_file go together"),
        (s.receiver.tls.ca_file is None or s.receiver.tls.enabled, "receiver.tls.ca_file",
         "a client CA needs cert_file and key_file (TLS) too"),
        (0 <= s.receiver.tls.port < 65536, "receiver.tls.port", "must be 0 (the main port) or a TCP port"),
        (s.receiver.tls.handshake_timeout_s > 0, "receiver.tls.handshake_timeout_s", "must be positive"),
        (s.receiver.tls.port == 0 or s.receiver.processes == 1 or not s.receiver.tls.enabled, "receiver.tls.port",
         "a TLS listener beside the plain one needs receiver.processes = 1 (use port = 0: TLS on the main port)"),
        (not s.receiver.require_user_identity or s.receiver.users_file is not None, "receiver.users_file",
         "receiver.require_user_identity needs a users file (dicomflow users add NAME)"),
        (s.warehouse.batch_max_messages >= 1, "warehouse.batch_max_messages", "must be at least 1"),
        (s.warehouse.batch_max_ms >= 1, "warehouse.batch_max_ms", "must be at least 1"),
        (s.warehouse.snapshot_interval_s >= 0, "warehouse.snapshot_interval_s", "must be 0 (off) or more"),
        (s.warehouse.threads >= 0, "warehouse.threads", "must be 0 (DuckDB decides) or more"),
        (bool(s.warehouse.group_id.strip()), "warehouse.group_id", "must not be empty"),
        (s.storage.s3.multipart_chunk_bytes >= 5 * 1024 * 1024, "storage.s3.multipart_chunk_bytes",
         "must be at least 5 MiB (S3's smallest part)"),
        (s.storage.backend != "s3" or bool(s.storage.s3.bucket.strip()), "storage.s3.bucket", "must not be empty"),
        (not s.storage.s3.prefix.startswith("/") and ".." not in s.storage.s3.prefix.split("/"), "storage.s3.prefix",
         "must be a relative key prefix without '..'"),
    ]


def _is_tag(text: str) -> bool:
    parts = text.replace("(", "").replace(")", "").split(",")
    try:
        return len(parts) == 2 and all(0 <= int(p, 16) <= 0xFFFF for p in parts)
    except ValueError:
        return False


__all__ = ["validate"]
