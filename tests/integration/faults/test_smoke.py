"""The fault-injection suite itself works: a tiny run of every phase, and its retrying sender.

The full suite (``scripts/faults.sh``: 20,000 instances, 100,000 soak
events) is too long for every test run; this runs it at a size that still
kills each of the four services once, soaks a few thousand events and
fuzzes a few dozen inputs, and kills the warehouse sink twice over 3,000
messages, in a few minutes. It starts its own private
stack, so it never touches the shared one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

import dicomflow_faults
from dicomflow.stack import LocalStack, free_port
from dicomflow_faults.instances import generate
from dicomflow_faults.sender import StoreSender

pytestmark = pytest.mark.slow


@pytest.mark.timeout(600)
def test_tiny_suite_run_injects_every_fault_and_loses_nothing(tmp_path: Path) -> None:
    report_path = tmp_path / "faults.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    # The suite is not installed: its folder (faults/) goes on the path, as scripts/faults.sh does.
    suite_folder = str(Path(dicomflow_faults.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (suite_folder, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dicomflow_faults",
         "--instances", "400", "--rate", "25", "--faults-per-kind", "1",
         "--soak", "3000", "--fuzz", "80", "--fuzz-files", "30", "--controls", "5", "--protocol-fuzz", "0",
         "--warehouse", "3000", "--warehouse-kills", "2",
         "--failover", "0", "--s3", "0", "--journal", "0", "--web-fuzz", "0",  # their own tests and the CI run cover those phases
         "--web", "0",
         "--seed", "20240315", "--work-dir", str(tmp_path), "--json", str(report_path)],
        capture_output=True, text=True, env=env, timeout=540, check=False,
    )
    output = proc.stdout + proc.stderr[-4000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["passed"], f"failed checks: {failed}\n{output}"

    assert report["lost"] == 0 and report["duplicates"] == 0
    by_kind = report["faults_by_kind"]
    assert set(by_kind) == {"consumer", "receiver", "kafka", "postgres"}
    assert all(v == {"injected": 1, "survived": 1} for v in by_kind.values()), by_kind
    run = report["fault_run"]
    assert run["acknowledged"] == 400 and run["load_instances_per_s"] > 0
    soak = report["soak"]
    assert soak["indexed"] == 3000 and len(soak["samples"]) >= 3
    fuzz = report["fuzz"]
    assert fuzz["bad_inputs"] >= 100 and fuzz["lost"] == 0 and fuzz["crashes"] == 0
    assert fuzz["dead_lettered"] + fuzz["indexed"] == fuzz["bad_inputs"]
    assert fuzz["controls_indexed"] == fuzz["controls"] == 5
    assert {"wire-format", "unreadable-dicom", "outside-storage-root"} <= set(fuzz["error_classes"])
    wh = report["warehouse"]
    assert wh["kills"] == wh["kills_mid_run"] == 2 and wh["starts"] == 3 and wh["exit_code"] == 0
    assert wh["lost"] == 0 and wh["duplicates"] == 0 and wh["dead_lettered"] == 0
    assert wh["rows"] == wh["expected_rows"] and wh["stored_offsets"] == wh["events"] >= 3000
    for figure in ("Load held:", "Faults:", "Warehouse sink:", "Bad inputs tried:", "Messages lost:", "Duplicates:", "RESULT: PASS"):
        assert figure in proc.stdout
    # Everything private was removed: no temporary stack folder is left behind.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dicomflow-faults-") and "logs" not in p.name]


class _FlakySCP:
    """A real Storage SCP that refuses every fifth first attempt and aborts one association."""

    def __init__(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt

        self.stored: set[str] = set()
        self.refused: set[str] = set()
        self.requests = 0
        self.aborted = False
        self._lock = threading.Lock()
        ae = AE(ae_title="FLAKY")
        ae.supported_contexts = AllStoragePresentationContexts
        self.port = free_port()
        server = ae.start_server(("127.0.0.1", self.port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, self.on_store)])
        assert server is not None
        self.server = server

    def on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.requests += 1
            if self.requests == 37 and not self.aborted:
                self.aborted = True
                event.assoc.abort()
                return 0x0000  # never reaches the sender: the association is gone
            if self.requests % 5 == 0 and uid not in self.refused:
                self.refused.add(uid)
                return 0xA700
            self.stored.add(uid)
            return 0x0000


@pytest.mark.timeout(120)
def test_sender_retries_until_every_instance_is_acknowledged(tmp_path: Path) -> None:
    scp = _FlakySCP()
    try:
        gen = generate(tmp_path, 120, seed=9)
        sender = StoreSender("127.0.0.1", scp.port, "FLAKY", [(i.sop_uid, i.path) for i in gen.instances],
                             associations=3, per_association=40)
        sender.start()
        assert sender.wait(90), sender.stats
        sender.stop()
    finally:
        scp.server.shutdown()
    acked = sender.acknowledged()
    assert acked == gen.sop_uids
    assert acked <= scp.stored  # nothing counted acknowledged that the SCP did not answer Success for
    assert sender.stats.failures["0xA700"] == len(scp.refused) > 0
    assert scp.aborted and sender.stats.retries > len(scp.refused)
    assert sender.stats.associations >= 4  # reconnected after the abort and every 40 instances


@pytest.mark.timeout(300)
def test_protocol_fuzz_phase_at_a_small_size(tmp_path: Path) -> None:
    """Mutated PDU sequences against a running receiver: no unexpected exception, no crash, RSS flat,
    and a valid association still stores an instance (the full 5,000 run is CI's fault run)."""
    report_path = tmp_path / "protocol.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    suite_folder = str(Path(dicomflow_faults.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (suite_folder, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dicomflow_faults", "--instances", "0", "--soak", "0", "--fuzz", "0",
         "--fuzz-files", "0", "--protocol-fuzz", "400", "--warehouse", "0", "--failover", "0", "--s3", "0", "--journal", "0",
         "--web-fuzz", "0", "--web", "0",
         "--seed", "20240316", "--work-dir", str(tmp_path),
         "--json", str(report_path)],
        capture_output=True, text=True, env=env, timeout=280, check=False,
    )
    output = proc.stdout + proc.stderr[-4000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    assert proc.returncode == 0 and report["passed"], output
    fuzz = report["protocol_fuzz"]
    assert fuzz["sequences"] == 400 and sum(fuzz["families"].values()) == 400
    assert fuzz["unexpected"] == 0 and fuzz["crashes"] == 0 and fuzz["control_stored"]
    # every family was tried, and the receiver answered with each kind of protocol answer
    assert len(fuzz["families"]) == 9
    assert {"AC", "RJ", "ABORT"} <= set(fuzz["answers"])
    assert "PDU sequences:      400 mutated, 0 unexpected exception(s), 0 receiver crash(es)" in proc.stdout


@pytest.mark.timeout(300)
def test_web_fuzz_phase_at_a_small_size(stack: LocalStack, tmp_path: Path) -> None:
    """Mutated HTTP requests against a running dicomflow web (OAuth2): no 5xx, no dropped connection, no
    traceback, every STOW part answered Success indexed and none refused (the full 5,000 run is CI's)."""
    report_path = tmp_path / "web.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    suite_folder = str(Path(dicomflow_faults.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (suite_folder, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-m", "dicomflow_faults", "--instances", "0", "--soak", "0", "--fuzz", "0",
         "--fuzz-files", "0", "--protocol-fuzz", "0", "--warehouse", "0", "--failover", "0", "--s3", "0", "--journal", "0",
         "--web-fuzz", "400", "--web", "0", "--seed", "20240317", "--work-dir", str(tmp_path), "--json", str(report_path),
         "--kafka-cache", str(stack.settings.stack.dir.resolve() / "cache")],  # the shared stack's jars
        capture_output=True, text=True, env=env, timeout=280, check=False,
    )
    output = proc.stdout + proc.stderr[-4000:]
    assert report_path.exists(), output
    report = json.loads(report_path.read_text())
    failed = [c for c in report["checks"] if not c["ok"]]
    assert proc.returncode == 0 and report["passed"], f"failed checks: {failed}\n{output}"
    web = report["web_fuzz"]
    assert web["requests"] == web["requested"] >= 400 + web["routes"] * 8  # the sweep: every route, every method
    assert web["server_errors"] == web["dropped"] == web["tracebacks"] == 0
    assert web["success_not_indexed"] == web["refused_indexed"] == 0
    assert web["stow_success"] > 0 and web["stow_refused"] > 0  # both sides of the STOW check were exercised
    assert {"200", "400", "401", "413"} <= set(web["answers"])
    assert "HTTP requests:      " in proc.stdout and "RESULT: PASS" in proc.stdout
