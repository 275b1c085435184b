"""The native engine's association with each C-STORE's network stages timed (``receiver.stage_timing_dir``).

Used instead of :class:`~dicomflow.receiver.acceptor.Association` only when
stage timing is on (benchmarks, :mod:`dicomflow.metrics.stages`), so the
association everyone else runs has no timing code at all. It adds to the
instance being received: ``receive`` (blocked reading each PDU), ``pdus``,
``pdv`` (everything between a PDU read and the next read or the answer:
PDV split, command set, fragments fed) and ``response`` (answering, minus the
store stages the service times itself); then closes the instance's record.
"""

from __future__ import annotations

import socket
import time

from dicomflow.ingest.service import StageRecorder
from dicomflow.receiver import dimse
from dicomflow.receiver.acceptor import Association, AssociationHost


class TimedAssociation(Association):
    """An :class:`~dicomflow.receiver.acceptor.Association` that times its stages (see the module documentation)."""

    def __init__(self, server: AssociationHost, sock: socket.socket, address: tuple[str, int], *,
                 stages: StageRecorder, secure: bool = False) -> None:
        super().__init__(server, sock, address, secure=secure)
        self.stages = stages
        #: perf_counter_ns at the end of the last PDU read or response sent (0: none yet).
        self._mark = 0

    def _read_pdu(self, idle: float) -> tuple[int, bytes]:
        started = time.perf_counter_ns()
        if self._mark:
            self.stages.add("pdv", started - self._mark)
        pdu = super()._read_pdu(idle)
        self._mark = time.perf_counter_ns()
        self.stages.add("receive", self._mark - started)
        self.stages.add("pdus", 1)
        return pdu

    def _answer(self, command: dimse.Command, context_id: int) -> None:
        started = time.perf_counter_ns()
        self.stages.add("pdv", started - self._mark)
        before = self.stages.named_ns()
        super()._answer(command, context_id)
        self._mark = time.perf_counter_ns()
        if command.command_field == dimse.C_STORE_RQ:
            self.stages.add("response", self._mark - started - (self.stages.named_ns() - before))
            self.stages.finish()
        else:
            self.stages.drop()  # a C-ECHO or C-FIND: no instance
        self._mark = time.perf_counter_ns()  # after the record's close: the next pdv is the next instance's


__all__ = ["TimedAssociation"]
