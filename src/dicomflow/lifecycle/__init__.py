"""The data lifecycle after a delete: the change events and the purge (``dicomflow purge``).

- :mod:`.publisher`: the change log → ``dicom_change_queue``, an outbox
  (at least once, in sequence order);
- :mod:`.purge`: the purge queue a delete left → the objects removed through
  the storage layer, idempotently;
- :mod:`.worker`: both, in one loop with one retry policy, until a stop or
  ``--until-idle``.

The deletes themselves are one store transaction
(:mod:`dicomflow.store.deletes`), run by ``DELETE`` over DICOMweb and
``dicomflow delete``.
"""

from dicomflow.lifecycle.exceptions import LifecycleError
from dicomflow.lifecycle.worker import LifecycleWorker, RoundResult

__all__ = ["LifecycleError", "LifecycleWorker", "RoundResult"]
