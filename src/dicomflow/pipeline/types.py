"""What parsing a batch yields: the types the pipeline's modules share.

A record of a batch becomes either a :class:`Parsed` (the store event plus
the series-state and instance records extracted from its file) or a
:class:`Poison` (why it can never be processed). They live here, apart from
the process pool (:mod:`.parse`) and the Kafka client, so the commit step,
the dead-letter step and the tests use them without either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field

from dicomflow.audit.dead_letters import MessageContext, dead_letter_audit, message_context
from dicomflow.kafka import dlq
from dicomflow.kafka.records import TP, Record
from dicomflow.models import AuditEvent, DicomImageMeta, DicomStateMeta, DicomStoreMeta
from dicomflow.pipeline.batch import next_offsets


@dataclass(frozen=True, slots=True)
class Parsed:
    """A store event whose file was found and read."""

    record: Record
    event: DicomStoreMeta
    state: DicomStateMeta
    image: DicomImageMeta


@dataclass(frozen=True, slots=True)
class Poison(dlq.Poison):
    """A store event that can never be processed, and why (it goes to the DLQ, :meth:`letter`).

    ``event`` is the decoded store event when the JSON was valid (it gives
    the audit event its tenant, study and file).
    """

    event: DicomStoreMeta | None = None

    def audit(self, *, node_id: str, default_tenant: str, when: dt.datetime | None = None) -> AuditEvent:
        """The audit event saying this instance was received but not indexed, and why (serious failure)."""
        if self.event is not None:
            e = self.event
            context = MessageContext(e.tenant_id, e.study_uid, e.sop_uid, e.file_path)
        else:
            context = message_context(self.record.value)
        return dead_letter_audit(node_id=node_id, default_tenant=default_tenant, source=self.record.source,
                                 error_class=self.error_class, reason=self.reason, context=context, when=when)


Item = Parsed | Poison


@dataclass
class ParsedBatch:
    """A batch after parsing: one item per record, in the batch's order."""

    items: list[Item]
    #: Monotonic time the batch window opened.
    started: float
    #: Seconds spent parsing (for the parse-time histogram).
    parse_s: float = 0.0
    _offsets: dict[TP, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self._offsets:
            self._offsets = next_offsets(i.record for i in self.items)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def good(self) -> list[Parsed]:
        """The items to persist and publish."""
        return [i for i in self.items if isinstance(i, Parsed)]

    @property
    def poison(self) -> list[Poison]:
        """The items to dead-letter."""
        return [i for i in self.items if isinstance(i, Poison)]

    def offsets(self) -> dict[TP, int]:
        """The offsets to commit once this batch is done (partitions still held only)."""
        return dict(self._offsets)

    def partitions(self) -> set[TP]:
        """The partitions this batch holds records of."""
        return set(self._offsets)

    def drop_partitions(self, partitions: Collection[TP]) -> int:
        """Forget revoked partitions: their items and their offsets; returns items dropped."""
        before = len(self.items)
        self.items = [i for i in self.items if i.record.tp not in partitions]
        for tp in partitions:
            self._offsets.pop(tp, None)
        return before - len(self.items)


__all__ = ["Item", "Parsed", "ParsedBatch", "Poison"]
