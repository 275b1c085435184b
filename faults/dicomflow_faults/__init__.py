"""The fault-injection suite: proof that nothing acknowledged is lost or duplicated.

Run it with ``scripts/faults.sh`` (or ``python -m dicomflow_faults`` with the
repository's ``faults/`` folder on ``PYTHONPATH``; it is not part of the
installed ``dicomflow`` package). It starts a private Kafka broker and
PostgreSQL server on free ports (it kills them, so never the shared
development stack) and runs eight phases, each
with its own topics and database:

1. **fault run** (:mod:`~dicomflow_faults.scenario`): a C-STORE load through
   ``dicomflow scp`` and ``dicomflow consume`` while the consumer, the
   receiver, the broker and PostgreSQL are SIGKILLed at random moments and
   restarted; afterwards every acknowledged instance must be in PostgreSQL
   exactly once, and nothing good in the dead-letter topic;
2. **soak** (:mod:`~dicomflow_faults.soak`): >= 100,000 store events through
   one consumer whose memory must stay flat;
3. **fuzz** (:mod:`~dicomflow_faults.fuzz`): hypothesis-generated payloads
   and damaged DICOM files, which must never crash the consumer and must
   all end in the dead-letter topic with a reason (or be indexed, for a
   damaged file that still parses);
4. **warehouse** (:mod:`~dicomflow_faults.warehouse`): >= 10,000 log, state,
   image and audit messages into ``dicomflow warehouse run``, SIGKILLed
   several times mid-run and restarted; the DuckDB file must hold every
   message exactly once;
5. **failover** (:mod:`~dicomflow_faults.failover`), on a private
   three-broker cluster of its own: the leader of the busiest partition is
   SIGKILLed and restarted, then two brokers are down together (below min
   ISR); no acknowledged instance may be lost, duplicated, or missing from
   Kafka, and the receiver must answer failure statuses meanwhile;
6. **s3** (:mod:`~dicomflow_faults.s3run`), on a private stack with an
   S3Proxy of its own: the fault run with ``storage.backend = "s3"`` while
   S3Proxy and the receiver are SIGKILLed and restarted; besides the fault
   run's checks, every acknowledged instance must have its object in the
   bucket and the receive spool must be empty.
7. **journal** (:mod:`~dicomflow_faults.journalrun`), on the single-broker
   stack: the fault run's load with ``receiver.ack = "journal"`` (Success
   from the receiver's local journal, Kafka afterwards) while the receiver
   alone is SIGKILLed at random moments; every instance answered Success
   must reach Kafka and PostgreSQL, and the journal must be empty once the
   receiver stopped;
8. **web** (:mod:`~dicomflow_faults.webrun`), last on the single-broker
   stack: QIDO-RS and WADO-RS load on ``dicomflow web`` while the PostgreSQL
   postmaster is SIGKILLed and restarted; no answer may be a 5xx other than
   503, every 503 must carry ``Retry-After``, answers while PostgreSQL is
   down must come within ``web.db_wait_ms`` + 2 s, 200s again within 5 s of it being ready, and
   the server's log must hold no traceback.

Beside them, on the single-broker stack, the **protocol fuzz**
(:mod:`~dicomflow_faults.protofuzz`) and the **web fuzz**
(:mod:`~dicomflow_faults.webfuzz`: mutated HTTP requests over every route of
``dicomflow web``; no 5xx, no dropped connection, no traceback, every STOW
part answered Success indexed and none refused).

The figures are printed at the end (:mod:`~dicomflow_faults.report`); the
exit code is non-zero when anything was lost or duplicated or a check failed.
"""

from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.report import SuiteReport

__all__ = ["PrivateStack", "SuiteReport"]
