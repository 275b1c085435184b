"""Routing: which topic and key each dicomflow message type goes to, as ready-to-send segments.

Every message type has its topic (from :class:`~dicomflow.settings.TopicSettings`)
and its key: store events go to storage_queue keyed by series (so one series
stays on one partition, in order) and, as receipts, to log_queue keyed by
trace id with the same payload; series states, instances and audit events
are keyed by their own ``key()``. A batch is sent as it is given: nothing is
collected into a map by key, so two messages with the same key are two
messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from dicomflow.kafka.delivery import ProduceHeaders, Segment
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta, encode_many

#: Kafka record headers as librdkafka takes them.
Headers = list[tuple[str, bytes]]
#: (key, value, headers) of one raw message (dead-letter topic).
RawMessage = tuple[bytes | None, bytes, Headers | None]


def store_segments(main: str, log_topic: str, events: Sequence[DicomStoreMeta], with_receipt: bool) -> list[Segment]:
    """storage_queue keyed by series, then (with_receipt) log_queue keyed by trace_id, same payloads."""
    values = encode_many(list(events))
    segments = [Segment(0, main, series_keys(events), values)]
    if with_receipt:
        segments.append(Segment(len(values), log_topic, [e.trace_id for e in events], values))
    return segments


def model_segments(
    topic: str, messages: Sequence[DicomStateMeta] | Sequence[DicomImageMeta] | Sequence[AuditEvent]
) -> list[Segment]:
    """One segment to ``topic``, each message keyed by its own ``key()``."""
    return [Segment(0, topic, [m.key() for m in messages], encode_many(list(messages)))]


def raw_segments(topic: str, items: Sequence[RawMessage]) -> list[Segment]:
    """(key, value, headers) tuples to ``topic`` as they are (the dead-letter topic)."""
    keys = [k for k, _, _ in items]
    values = [v for _, v, _ in items]
    headers = [cast("ProduceHeaders | None", h) for _, _, h in items]
    return [Segment(0, topic, keys, values, headers if any(headers) else None)]


def series_keys(events: Sequence[DicomStoreMeta]) -> list[str]:
    """Each event's storage_queue key, hashing each series once per batch.

    A batch holds many instances of few series; the md5 is the costliest
    step of building a batch, so it is computed once per series.
    """
    cache: dict[tuple[str, str, str, str], str] = {}
    keys = []
    for e in events:
        series = (e.tenant_id, e.patient_id, e.study_uid, e.series_uid)
        key = cache.get(series)
        if key is None:
            key = cache[series] = e.key()
        keys.append(key)
    return keys


__all__ = ["Headers", "RawMessage", "model_segments", "raw_segments", "series_keys", "store_segments"]
