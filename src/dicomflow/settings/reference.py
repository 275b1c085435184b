"""Compatibility with the Rust reference services' ``application.json``.

An existing deployment's configuration file works as it is: its keys map
onto dicomflow's sections (:data:`REFERENCE_KEYS`), in either file format,
and the reference's sections dicomflow has no use for are tolerated rather
than refused (:data:`REFERENCE_ONLY_SECTIONS`).
"""

from __future__ import annotations

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

#: Sections of the reference's file that dicomflow reads nothing from (beyond REFERENCE_KEYS).
REFERENCE_ONLY_SECTIONS: frozenset[str] = frozenset(
    ("main_database", "message_queue", "log", "redis", "server", "dicom_store")
)


__all__ = ["REFERENCE_KEYS", "REFERENCE_ONLY_SECTIONS"]
