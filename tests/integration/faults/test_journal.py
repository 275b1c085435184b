"""The fault suite's journal run at a small size: receiver.ack = "journal", the receiver SIGKILLed mid-load.

It starts its own private stack, sends 240 instances over four associations
to a receiver that answers Success from its local journal, and SIGKILLs the
receiver twice under the load (restarted after a short pause). What
issue 22 asks of the journal: every instance answered Success reaches Kafka
and PostgreSQL (exactly one row each), the restarted receiver publishes
what the killed one had journaled but not yet published, and the journal is
empty once the receiver stopped cleanly. CI's run of ``scripts/faults.sh``
sends 1,500 with five kills.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import dicomflow_faults
from dicomflow.stack import LocalStack

pytestmark = pytest.mark.slow


@pytest.mark.timeout(400)
def test_every_instance_acknowledged_from_the_journal_reaches_kafka_across_receiver_kills(
        stack: LocalStack, tmp_path: Path) -> None:
    report_path = tmp_path / "journal.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    suite_folder = str(Path(dicomflow_faults.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (suite_folder, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dicomflow_faults", "--instances", "0", "--soak", "0", "--fuzz", "0",
         "--fuzz-files", "0", "--protocol-fuzz", "0", "--warehouse", "0", "--failover", "0", "--s3", "0",
         "--web-fuzz", "0", "--web", "0", "--journal", "240", "--journal-kills", "2",  # only this phase
         "--seed", "2222", "--work-dir", str(tmp_path), "--json", str(report_path),
         "--kafka-cache", str(stack.settings.stack.dir.resolve() / "cache")],  # the shared stack's jars
        capture_output=True, text=True, env=env, timeout=380, check=False,
    )
    output = proc.stdout + proc.stderr[-4000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    run = report["journal_run"]
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["passed"], f"failed checks: {failed}\n{output}"
    assert run["acknowledged"] == 240 and run["lost"] == 0 and run["duplicates"] == 0
    kills = [f for f in run["faults"] if f["kind"] == "receiver"]
    assert len(kills) == 2 and all(f["survived"] for f in kills)
    names = {c["name"] for c in report["checks"]}
    assert {"journal: every acknowledged instance is in PostgreSQL",
            "journal: nothing left in the journal after the receiver stopped"} <= names
    for figure in ("Journal run (receiver.ack = journal, receiver SIGKILLed)", "Journal run:        ", "RESULT: PASS"):
        assert figure in proc.stdout
