"""The S3 fault run: the C-STORE load of :mod:`.scenario` on ``storage.backend = "s3"``, S3Proxy SIGKILLed mid-run.

The private stack runs an S3Proxy of its own (:class:`~dicomflow_faults.privstack.PrivateStack`
with ``s3=True``); the phase's receiver writes every instance into its
bucket through the local receive spool, the consumer reads the headers back
by ranged GETs. The schedule kills S3Proxy (and the receiver, whose kill
between the PUT and Kafka's acknowledgement is what the ``.unacknowledged``
marker objects are for) and restarts it with the same credentials.

While S3Proxy is down the receiver must answer failure statuses (the sender
retries them), never Success, and the consumer must pause, not dead-letter.
Beyond the fault run's own checks (every acknowledged instance indexed once,
nothing good in the DLQ), this run checks the bucket: every acknowledged
instance has its object, and the receive spool holds nothing once the
receiver stopped.
"""

from __future__ import annotations

import logging
from pathlib import Path

from dicomflow.blobs import BlobError, open_store
from dicomflow_faults.checks import Check
from dicomflow_faults.privstack import PrivateStack
from dicomflow_faults.scenario import FaultKind, FaultRun, FaultRunResult

log = logging.getLogger(__name__)

#: What the S3 run kills: the object store, and the receiver between its PUT and Kafka's acknowledgement.
S3_KINDS: tuple[FaultKind, ...] = ("s3proxy", "receiver")


def run_s3_faults(stack: PrivateStack, instances: int, *, seed: int, log_dir: Path, per_kind: int = 2,
                  associations: int = 4, down_range: tuple[float, float] = (1.0, 4.0)) -> FaultRunResult:
    """The fault run on S3, with the bucket's and the spool's checks added to its result.

    Raises:
        StackError: a component or service could not be started at all.
    """
    run = FaultRun(stack, instances, seed=seed, log_dir=log_dir, per_kind=per_kind, kinds=S3_KINDS,
                   associations=associations, down_range=down_range, name="s3", s3=True)
    result = run.run()
    result.checks.extend(_bucket_checks(run, run.acked))
    return result


def _bucket_checks(run: FaultRun, acked: set[str]) -> list[Check]:
    storage = run.phase.settings.storage
    try:
        keys = [info.key for info in open_store(storage).list()]
    except BlobError as exc:
        return [Check("s3: every acknowledged instance has its object in the bucket", False,
                      f"cannot list the bucket: {exc}")]
    stored = {Path(k).name.removesuffix(".dcm") for k in keys if k.endswith(".dcm") and not Path(k).name.startswith(".")}
    missing = acked - stored
    spool = _spool_of(run)
    left = sorted(p.name for p in spool.rglob("*") if p.is_file()) if spool.is_dir() else []
    return [
        Check("s3: every acknowledged instance has its object in the bucket", not missing,
              f"{len(acked) - len(missing)} of {len(acked)} in s3://{storage.s3.bucket}/{storage.s3.prefix}"
              + (f"; missing e.g. {sorted(missing)[0]}" if missing else "")),
        Check("s3: the receive spool is empty after the run", not left,
              f"{len(left)} file(s) left in {spool}" + (f", e.g. {left[0]}" if left else "")),
    ]


def _spool_of(run: FaultRun) -> Path:
    """The receiver's spool folder (a relative one is under the receiver's working folder)."""
    spool = Path(run.phase.settings.storage.spool)
    return spool if spool.is_absolute() else run.log_dir / spool


__all__ = ["S3_KINDS", "run_s3_faults"]
