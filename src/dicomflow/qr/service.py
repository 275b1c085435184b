"""The C-FIND service (engine-agnostic): a request in, pending responses and a final status out, one audit event.

A network engine (the native acceptor or pynetdicom) hands over the
identifier's bytes, the transfer syntax they came in, the calling AE's
tenant and who is asking; :meth:`FindService.find` yields the responses:
one Pending (0xFF00, or 0xFF01 when a key is answered empty because the
index does not hold it) per match, then the final status:

- 0x0000 every match was sent;
- 0xFE00 cancelled (the engine's ``cancelled()`` said a C-CANCEL arrived);
- 0xB001 more than ``[qr] max_results`` matched: the first ``max_results``
  were sent (PS3.4 C.4.1.1.4, "matching reached response limit");
- 0xA900 the identifier does not fit the model (no level, relational);
- 0xC000 a matching value or the identifier cannot be read;
- 0xA700 the index cannot be reached (retry later).

The audit event is handed to one background thread: waiting for Kafka's
acknowledgement would hold the association (its next request) up to the
publish timeout; :meth:`FindService.close` waits for the pending ones.

Queries run on a small pool of PostgreSQL connections opened on the first
C-FIND and shared by the process's associations. At most ``max_results + 1``
rows are read per query, so memory per query is bounded.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from dicomflow.audit import events as audit_events
from dicomflow.audit.cfind import dimse_query
from dicomflow.errors import ConfigError
from dicomflow.models import AuditEvent
from dicomflow.qr import exceptions as st
from dicomflow.qr.exceptions import QrError
from dicomflow.qr.identifier import FindQuery, read_query
from dicomflow.qr.model import FIND_SOP_CLASSES
from dicomflow.qr.results import Answer, answer, decode_identifier
from dicomflow.qr.sql import find_sql
from dicomflow.settings import DatabaseSettings, QrSettings

log = logging.getLogger(__name__)

#: Seconds a query waits for a free connection of the pool.
POOL_WAIT_S = 10.0


@dataclass(frozen=True)
class FindRequest:
    """One C-FIND-RQ as an engine received it."""

    sop_class_uid: str
    identifier: bytes
    transfer_syntax: str
    #: The calling AE's tenant (decided by the receiver: ``ingest.ae_tenants``, else the default).
    tenant: str
    calling_ae: str
    calling_address: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class FindResponse:
    """One C-FIND-RSP: a pending match (with its identifier) or the final status (with an Error Comment)."""

    status: int
    identifier: Answer | None = None
    comment: str | None = None


_FINAL_OUTCOME = {st.SUCCESS: audit_events.SUCCESS, st.CANCEL: audit_events.SUCCESS,
                  st.RESPONSE_LIMIT: audit_events.SUCCESS, st.OUT_OF_RESOURCES: audit_events.SERIOUS_FAILURE}


class FindService:
    """Answers C-FIND from the index (see the module documentation); thread-safe.

    Raises:
        ConfigError: (constructor) ``qr.max_results`` or ``qr.connections`` below 1.
    """

    def __init__(self, qr: QrSettings, database: DatabaseSettings, *, ae_title: str, node_id: str,
                 audit: Callable[[Sequence[AuditEvent]], None]) -> None:
        if qr.max_results < 1:
            raise ConfigError("qr.max_results", "settings", "must be at least 1")
        if qr.connections < 1:
            raise ConfigError("qr.connections", "settings", "must be at least 1")
        self.qr = qr
        self.database = database
        self.ae_title = ae_title
        self.node_id = node_id
        self._audit = audit
        self._auditor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dicomflow-qr-audit")
        self._pool: Any = None
        self._lock = threading.Lock()

    def find(self, request: FindRequest, cancelled: Callable[[], bool]) -> Iterator[FindResponse]:
        """The responses to ``request``, the final one last; the audit event once the final one was taken."""
        status, comment, sent = st.SUCCESS, None, 0
        try:
            model = FIND_SOP_CLASSES.get(request.sop_class_uid)
            if model is None:
                raise QrError(st.SOP_CLASS_NOT_SUPPORTED, f"{request.sop_class_uid} is not a FIND SOP class served here")
            query = read_query(model, self._identifier(request))
            rows = self._rows(query, request.tenant)
            pending = st.PENDING_WARNING if query.unsupported else st.PENDING
            for row in rows[: self.qr.max_results]:
                if cancelled():
                    status = st.CANCEL
                    break
                yield FindResponse(pending, answer(query, row, self.ae_title))
                sent += 1
            else:
                if len(rows) > self.qr.max_results:
                    status = st.RESPONSE_LIMIT
                    comment = f"more than {self.qr.max_results} matches (qr.max_results); refine the query"
        except QrError as exc:
            status, comment = exc.status, exc.comment
            log.info("C-FIND from %s answered 0x%04X: %s", request.calling_ae, status, comment)
        yield FindResponse(status, None, comment)
        self._emit(request, sent, status, comment)

    def _identifier(self, request: FindRequest) -> Dataset:
        try:
            return decode_identifier(request.identifier, request.transfer_syntax)
        except Exception as exc:
            raise QrError(st.UNABLE_TO_PROCESS, f"the identifier cannot be read: {exc}"[:200]) from exc

    def _rows(self, query: FindQuery, tenant: str) -> list[dict[str, Any]]:
        """At most ``max_results + 1`` matching rows.

        Raises:
            QrError: 0xA700 when the index cannot be reached or the query fails.
        """
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import PoolTimeout

        statement, params = find_sql(query, tenant, self.qr.max_results + 1)
        try:
            with self._connections().connection(timeout=POOL_WAIT_S) as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute(statement, params)
                rows: list[dict[str, Any]] = cur.fetchall()
                return rows
        except (psycopg.Error, PoolTimeout) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("C-FIND: the index cannot be queried: %s", first)
            raise QrError(st.OUT_OF_RESOURCES, "the index cannot be queried now; retry later") from exc

    def _connections(self) -> Any:
        """The pool, opened on first use."""
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(self.database.conninfo(), min_size=1, max_size=self.qr.connections,
                                            kwargs={"autocommit": True}, open=True, name="dicomflow-qr")
            return self._pool

    def _emit(self, request: FindRequest, results: int, status: int, comment: str | None) -> None:
        """The Query audit event (an observer: a failure is logged by the callback, never raised here)."""
        outcome = _FINAL_OUTCOME.get(status, audit_events.MINOR_FAILURE)
        try:
            event = dimse_query(
                node_id=self.node_id, tenant_id=request.tenant, ae_title=self.ae_title, calling_ae=request.calling_ae,
                calling_address=request.calling_address, user=request.user, sop_class_uid=request.sop_class_uid,
                identifier=request.identifier, transfer_syntax=request.transfer_syntax, results=results,
                status=status, outcome=outcome, outcome_description=comment,
            )
            self._auditor.submit(self._publish, [event])
        except Exception:  # auditing must not break answering
            log.exception("could not audit a C-FIND")

    def _publish(self, events: Sequence[AuditEvent]) -> None:
        try:
            self._audit(events)
        except Exception:  # an observer: logged, never raised
            log.exception("could not publish a C-FIND's audit event")

    def close(self) -> None:
        """Publish the pending audit events, close the connections."""
        self._auditor.shutdown(wait=True)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()


__all__ = ["FindRequest", "FindResponse", "FindService"]
