"""Topic administration: create, describe, list and delete topics; the broker count.

:func:`create_topics` makes every topic of docs/architecture.md (the four data topics,
audit, the consumer's dead-letter topic, and the warehouse sink's
``<topic>.dlq`` of the log, state, image and audit topics: see
:meth:`TopicSettings.all`) with the configured partitions, replication,
``min.insync.replicas`` and retention. Replication not configured
(``topics.replication_factor = 0``) is derived from the brokers the cluster
reports (:func:`replication_for`): 3 replicas and min ISR 2 on three brokers or
more, so one broker may fail without stopping writes and two failures stop
acks=all writes instead of losing them; 1 and 1 on a single broker. A
replication factor above the broker count is refused before anything is
created. It is idempotent: a topic that exists is left as it is, even
when its partition count differs from the settings, because adding
partitions would move keys to other partitions and break the per-series
order of storage_queue; the difference is reported instead.

Reading a topic back (for tests, the demo and operators) is :mod:`.reader`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from confluent_kafka import KafkaError, KafkaException

# The documented import path; the package's type stubs do not re-export these.
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]

from dicomflow.kafka._auth import AuthWatch
from dicomflow.kafka._logging import librdkafka_log
from dicomflow.kafka.config import client_config, settings_for
from dicomflow.kafka.exceptions import TopicAdminError, kafka_error_text
from dicomflow.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicInfo:
    """A topic as the broker describes it; ``partitions`` is None when it does not exist."""

    name: str
    partitions: int | None
    replication_factor: int | None = None
    retention_ms: int | None = None
    min_insync_replicas: int | None = None

    @property
    def exists(self) -> bool:
        return self.partitions is not None


@dataclass(frozen=True)
class TopicOutcome:
    """What :func:`create_topics` did with one topic, and how it differs from the settings."""

    name: str
    action: Literal["created", "exists"]
    partitions: int
    replication_factor: int
    retention_ms: int | None
    min_insync_replicas: int | None = None
    #: Differences between an existing topic and the settings (left unchanged on purpose).
    drift: tuple[str, ...] = ()


def admin_client(kafka: KafkaSettings | str, watch: AuthWatch | None = None) -> AdminClient:
    """An admin client with the shared client settings (security pass-through included).

    ``watch`` (an :class:`~dicomflow.kafka._auth.AuthWatch`) becomes its error
    callback, so a refused password or an untrusted certificate can be told
    from a broker that does not answer (:func:`cluster_metadata`).
    """
    config = client_config(settings_for(kafka), client_id="dicomflow-admin")
    if watch is not None:
        config["error_cb"] = watch
    return AdminClient(config, logger=librdkafka_log)


def _watched_admin(settings: KafkaSettings) -> tuple[AdminClient, AuthWatch]:
    watch = AuthWatch(settings.brokers, "admin client")
    return admin_client(settings, watch), watch


def cluster_metadata(admin: AdminClient, watch: AuthWatch, settings: KafkaSettings, timeout_s: float,
                     what: str = "cannot list topics") -> Any:
    """The cluster's metadata, asked for in one-second slices so that an authentication or TLS
    failure ends the wait at once instead of after ``timeout_s``.

    Raises:
        TopicAdminError: the broker refused the credentials or its certificate (naming the broker),
            or did not answer within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        try:
            return admin.list_topics(timeout=max(min(remaining, 1.0), 0.1))
        except KafkaException as exc:
            admin.poll(0.05)  # serves the error callback
            failure = watch.failure
            if failure is not None:
                raise TopicAdminError(f"{what}: {failure}") from failure
            if time.monotonic() >= deadline:
                raise TopicAdminError(f"{what} on {settings.brokers}: {kafka_error_text(exc)}") from exc


def _is_code(exc: BaseException, code: int) -> bool:
    return bool(exc.args) and isinstance(exc.args[0], KafkaError) and exc.args[0].code() == code


def describe_topics(kafka: KafkaSettings | str, names: Iterable[str], *, timeout_s: float = 30.0) -> list[TopicInfo]:
    """Partition count, replication factor and retention of each named topic (missing ones too).

    Raises:
        TopicAdminError: the broker did not answer within ``timeout_s``.
    """
    settings = settings_for(kafka)
    admin, watch = _watched_admin(settings)
    names = list(names)
    metadata = cluster_metadata(admin, watch, settings, timeout_s)
    present = [n for n in names if n in metadata.topics and metadata.topics[n].error is None]
    configs = _configs(admin, present, timeout_s) if present else {}
    infos = []
    for name in names:
        if name not in present:
            infos.append(TopicInfo(name, None))
            continue
        partitions = metadata.topics[name].partitions
        replicas = len(partitions[0].replicas) if 0 in partitions else None
        conf = configs.get(name, {})
        infos.append(TopicInfo(name, len(partitions), replicas, conf.get("retention.ms"),
                               conf.get("min.insync.replicas")))
    return infos


def broker_count(kafka: KafkaSettings | str, *, timeout_s: float = 30.0) -> int:
    """How many brokers the cluster's metadata lists right now.

    Raises:
        TopicAdminError: the cluster did not answer within ``timeout_s``.
    """
    settings = settings_for(kafka)
    admin, watch = _watched_admin(settings)
    metadata = cluster_metadata(admin, watch, settings, timeout_s, "cannot read the cluster metadata")
    return len(metadata.brokers)


def replication_for(topics: TopicSettings, brokers: int, where: str = "the cluster") -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for new topics on a cluster of ``brokers`` brokers.

    Configured values win; 0 means derived: replication ``min(3, brokers)``,
    min ISR one less than the replication factor (at least 1).

    Raises:
        TopicAdminError: the replication factor exceeds the broker count, or
            min ISR exceeds the replication factor.
    """
    rf = topics.replication_factor or max(1, min(3, brokers))
    if rf > brokers:
        raise TopicAdminError(
            f"topics.replication_factor is {rf} but {where} has only {brokers} broker(s): "
            f"a partition cannot have more replicas than there are brokers; "
            f"set topics.replication_factor to {brokers} or less (0 derives it)")
    isr = topics.min_insync_replicas or max(1, rf - 1)
    if isr > rf:
        raise TopicAdminError(f"topics.min_insync_replicas is {isr}, more than the replication factor {rf}: "
                              "no write could ever be acknowledged")
    return rf, isr


def list_cluster_topics(kafka: KafkaSettings | str, *, timeout_s: float = 30.0) -> list[str]:
    """Every topic on the cluster except Kafka's internal ones, sorted.

    Raises:
        TopicAdminError: the broker did not answer within ``timeout_s``.
    """
    settings = settings_for(kafka)
    admin, watch = _watched_admin(settings)
    metadata = cluster_metadata(admin, watch, settings, timeout_s)
    return sorted(t for t in metadata.topics if not t.startswith("__"))


def unreachable(kafka: KafkaSettings | str, *, timeout_s: float = 3.0) -> str | None:
    """None when the brokers answer a metadata request, else why not (a health probe's answer)."""
    try:
        list_cluster_topics(kafka, timeout_s=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"unreachable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def _configs(admin: AdminClient, names: Sequence[str], timeout_s: float) -> dict[str, dict[str, int]]:
    """``retention.ms`` and ``min.insync.replicas`` of each topic; a topic whose configuration
    cannot be read is left out."""
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in names], request_timeout=timeout_s)
    out: dict[str, dict[str, int]] = {}
    deadline = time.monotonic() + timeout_s + 1.0  # past the request's own timeout, so that one answers first
    for resource, future in futures.items():
        try:
            entries = future.result(timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException as exc:
            log.warning("cannot read the configuration of topic %s: %s", resource.name, kafka_error_text(exc))
            continue
        except TimeoutError:
            log.warning("cannot read the configuration of topic %s: no answer within %.0f s", resource.name, timeout_s)
            continue
        values = out.setdefault(resource.name, {})
        for key in ("retention.ms", "min.insync.replicas"):
            entry = entries.get(key)
            if entry is not None and entry.value is not None:
                values[key] = int(entry.value)
    return out


def create_topics(kafka: KafkaSettings | str, topics: TopicSettings, *, timeout_s: float = 30.0) -> list[TopicOutcome]:
    """Create every dicomflow topic that does not exist yet; report the others and their drift.

    Running it twice changes nothing: the second run finds every topic and
    creates none. New topics get ``topics.partitions``, the replication
    factor and ``min.insync.replicas`` of :func:`replication_for` and
    ``retention.ms = topics.retention_ms``;
    the call returns once the broker's metadata shows them, so a producer
    started right after finds their partitions.

    Raises:
        TopicAdminError: the broker is unreachable, refuses (replication factor
            larger than the cluster, not authorized), or did not answer in time.
    """
    settings = settings_for(kafka)
    admin = admin_client(settings)
    rf, isr = replication_for(topics, broker_count(settings, timeout_s=timeout_s), f"the cluster at {settings.brokers}")
    names = topics.all()
    before = {t.name: t for t in describe_topics(settings, names, timeout_s=timeout_s)}
    missing = [n for n in names if not before[n].exists]
    created: set[str] = set()
    if missing:
        requests = [
            NewTopic(n, num_partitions=topics.partitions, replication_factor=rf,
                     config={"retention.ms": str(topics.retention_ms), "min.insync.replicas": str(isr)})
            for n in missing
        ]
        futures = admin.create_topics(requests, request_timeout=timeout_s, operation_timeout=timeout_s)
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
                created.add(name)
                log.info("created topic %s: %d partition(s), replication %d, min ISR %d, retention %d ms",
                         name, topics.partitions, rf, isr, topics.retention_ms)
            except KafkaException as exc:
                if _is_code(exc, KafkaError.TOPIC_ALREADY_EXISTS):  # created by someone else meanwhile
                    continue
                raise TopicAdminError(f"cannot create topic {name} on {settings.brokers}: {kafka_error_text(exc)}") from exc
            except TimeoutError as exc:
                raise TopicAdminError(f"cannot create topic {name} on {settings.brokers}: "
                                      f"no answer within {timeout_s:.0f} s") from exc
        _wait_visible(admin, created, topics.partitions, timeout_s)
    after = {t.name: t for t in describe_topics(settings, names, timeout_s=timeout_s)}
    return [_outcome(n, n in created, after[n], topics, rf, isr) for n in names]


def _outcome(name: str, created: bool, info: TopicInfo, topics: TopicSettings, rf: int, isr: int) -> TopicOutcome:
    drift = []
    if info.partitions != topics.partitions:
        drift.append(f"{info.partitions} partition(s), settings say {topics.partitions}")
    if info.replication_factor is not None and info.replication_factor != rf:
        drift.append(f"replication {info.replication_factor}, settings say {rf}")
    if info.min_insync_replicas is not None and info.min_insync_replicas != isr:
        drift.append(f"min ISR {info.min_insync_replicas}, settings say {isr}")
    if info.retention_ms is not None and info.retention_ms != topics.retention_ms:
        drift.append(f"retention {info.retention_ms} ms, settings say {topics.retention_ms} ms")
    for line in drift:
        log.warning("topic %s exists with %s (left unchanged)", name, line)
    return TopicOutcome(
        name=name,
        action="created" if created else "exists",
        partitions=info.partitions or 0,
        replication_factor=info.replication_factor or 0,
        retention_ms=info.retention_ms,
        min_insync_replicas=info.min_insync_replicas,
        drift=tuple(drift),
    )


def _wait_visible(admin: AdminClient, names: set[str], partitions: int, timeout_s: float) -> None:
    """Wait until the metadata lists each new topic with all its partitions led.

    Raises:
        TopicAdminError: not visible within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        try:
            metadata = admin.list_topics(timeout=max(deadline - time.monotonic(), 0.1))
        except KafkaException:
            metadata = None
        if metadata is not None:
            for name in list(pending):
                topic = metadata.topics.get(name)
                if topic is not None and topic.error is None and len(topic.partitions) == partitions \
                        and all(p.leader >= 0 for p in topic.partitions.values()):
                    pending.discard(name)
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise TopicAdminError(f"topics {', '.join(sorted(pending))} created but not visible after {timeout_s:.0f} s")
        time.sleep(0.1)


def delete_topics(kafka: KafkaSettings | str, names: Iterable[str], *, timeout_s: float = 30.0) -> None:
    """Delete topics (tests clean up after themselves); a topic already gone is not an error.

    Raises:
        TopicAdminError: the broker refused or did not answer in time.
    """
    settings = settings_for(kafka)
    names = list(names)
    if not names:
        return
    admin = admin_client(settings)  # kept referenced: the futures fail if the client is destroyed
    futures = admin.delete_topics(names, request_timeout=timeout_s, operation_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if _is_code(exc, KafkaError.UNKNOWN_TOPIC_OR_PART):
                continue
            raise TopicAdminError(f"cannot delete topic {name} on {settings.brokers}: {kafka_error_text(exc)}") from exc
        except TimeoutError as exc:
            raise TopicAdminError(f"cannot delete topic {name} on {settings.brokers}: "
                                  f"no answer within {timeout_s:.0f} s") from exc


__all__ = [
    "TopicInfo",
    "TopicOutcome",
    "admin_client",
    "broker_count",
    "cluster_metadata",
    "create_topics",
    "delete_topics",
    "describe_topics",
    "list_cluster_topics",
    "replication_for",
    "unreachable",
]
