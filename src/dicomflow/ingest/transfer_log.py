"""The ingest audit trail: what each session transferred, per study.

PS3.15 asks for one "DICOM Instances Transferred" (110104) message per study
per association, not one per instance. A :class:`SessionKey` names one such
session of a caller: a DICOM association, a STOW-RS request, a ``publish``
run. :class:`TransferLog` counts what each session stored (and failed to
store) and, when it ends, turns the counts into audit events: one success
event per (tenant, study) with the instance count and SOP classes, and one
failure event per (tenant, study, outcome) with the count and the first
reason.

Auditing observes; it never decides. A failure to publish audit events is
logged and does not change any C-STORE status.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from dicomflow.audit import events as audit
from dicomflow.models import AuditEvent

log = logging.getLogger(__name__)

#: Study key used for failures that happen before a study UID is known.
UNKNOWN_STUDY = "unknown"


SessionKind = Literal["association", "stow-rs", "publish"]


@dataclass(frozen=True, eq=False)
class SessionKey:
    """One caller's session with ingest: a DICOM association, a STOW-RS request, a ``publish`` run.

    Keys compare by identity: the caller makes one when the session starts
    and passes that same key with every instance and when it ends (an
    engine keeps one per association). ``kind`` only says which sort of
    session it is, for the log.
    """

    kind: SessionKind

    def __repr__(self) -> str:
        return f"<{self.kind} session {id(self):#x}>"


@dataclass
class _StudyTally:
    instances: int = 0
    sop_classes: set[str] = field(default_factory=set)
    patient_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Peer:
    """Both ends of a session, for the audit participants (for STOW-RS: the user and this server)."""

    calling_ae: str
    calling_address: str | None
    called_ae: str
    called_address: str | None
    #: The username of the requestor's User Identity (PS3.7 D.3.3.7), if it sent one.
    user: str | None = None


@dataclass
class _Session:
    peer: Peer
    #: (tenant, study_uid, outcome) -> tally
    tallies: dict[tuple[str, str, audit.Outcome], _StudyTally] = field(default_factory=dict)


class TransferLog:
    """Per-session tallies of stored and refused instances, emitted when the session ends.

    ``emit`` receives the finished audit events (the receiver publishes them
    to audit_queue). An instance recorded after its session was finished (a
    store racing an abort) is emitted on its own rather than lost.
    """

    def __init__(self, node_id: str, emit: Callable[[Sequence[AuditEvent]], None]) -> None:
        self._node_id = node_id
        self._emit = emit
        self._lock = threading.Lock()
        self._open: dict[SessionKey, _Session] = {}
        self._finished: weakref.WeakSet[SessionKey] = weakref.WeakSet()

    def opened(self, session: SessionKey, peer: Peer) -> None:
        """Start the tally of a session (called when an association is established, a request or run starts)."""
        with self._lock:
            self._open[session] = _Session(peer)

    def stored(self, session: SessionKey, *, tenant: str, study_uid: str, sop_class_uid: str, patient_id: str | None) -> None:
        """Count one instance stored and acknowledged."""
        self._record(session, tenant, study_uid, audit.SUCCESS, sop_class_uid, patient_id, None)

    def failed(
        self, session: SessionKey, *, tenant: str, study_uid: str | None, outcome: audit.Outcome, reason: str,
        sop_class_uid: str | None = None,
    ) -> None:
        """Count one instance refused, with the outcome code and why."""
        self._record(session, tenant, study_uid or UNKNOWN_STUDY, outcome, sop_class_uid, None, reason)

    def _record(
        self, session: SessionKey, tenant: str, study_uid: str, outcome: audit.Outcome,
        sop_class_uid: str | None, patient_id: str | None, reason: str | None,
    ) -> None:
        late: _Session | None = None
        with self._lock:
            entry = self._open.get(session)
            if entry is None:
                if session not in self._finished:
                    log.debug("instance recorded for %r, never opened; auditing it alone", session)
                late = entry = _Session(Peer("unknown", None, "", None))
            tally = entry.tallies.setdefault((tenant, study_uid, outcome), _StudyTally())
            tally.instances += 1
            if sop_class_uid:
                tally.sop_classes.add(sop_class_uid)
            if patient_id and tally.patient_id is None:
                tally.patient_id = patient_id
            if reason and tally.reason is None:
                tally.reason = reason
        if late is not None:
            self._publish(self._events(late))

    def closed(self, session: SessionKey) -> tuple[int, int]:
        """The session ended (the connection closed): emit its audit events; return (stored, refused) counts."""
        with self._lock:
            entry = self._open.pop(session, None)
            self._finished.add(session)
        if entry is None or not entry.tallies:
            return 0, 0
        self._publish(self._events(entry))
        stored = sum(t.instances for (_, _, outcome), t in entry.tallies.items() if outcome == audit.SUCCESS)
        refused = sum(t.instances for (_, _, outcome), t in entry.tallies.items() if outcome != audit.SUCCESS)
        return stored, refused

    def peer_of(self, session: SessionKey) -> Peer | None:
        """The peer of an open session (None when unknown)."""
        with self._lock:
            entry = self._open.get(session)
        return entry.peer if entry is not None else None

    def emit(self, events: list[AuditEvent]) -> None:
        """Publish events right away (observer: a failure is logged)."""
        self._publish(events)

    def pending(self) -> int:
        """Sessions still open (for shutdown)."""
        with self._lock:
            return len(self._open)

    def _events(self, entry: _Session) -> list[AuditEvent]:
        peer = entry.peer
        out: list[AuditEvent] = []
        for (tenant, study_uid, outcome), tally in entry.tallies.items():
            description = None
            if outcome != audit.SUCCESS:
                description = f"{tally.instances} instance(s) refused: {tally.reason or 'unknown reason'}"
            out.append(audit.instances_transferred(
                node_id=self._node_id, tenant_id=tenant, study_uid=study_uid,
                instance_count=tally.instances, sop_classes=sorted(tally.sop_classes),
                patient_id=tally.patient_id,
                source_ae=peer.calling_ae, source_address=peer.calling_address, source_user=peer.user,
                destination_ae=peer.called_ae, destination_address=peer.called_address,
                outcome=outcome, outcome_description=description,
            ))
        return out

    def _publish(self, events: list[AuditEvent]) -> None:
        try:
            self._emit(events)
        except Exception:
            log.exception("publishing %d audit event(s) failed", len(events))


__all__ = ["UNKNOWN_STUDY", "Peer", "SessionKey", "SessionKind", "TransferLog"]
