"""receiver.stage_timing_dir: every C-STORE's stages timed inside the native receiver, written when it stops."""

from __future__ import annotations

import json
from pathlib import Path

from dicomflow.corpus import make_corpus
from dicomflow.settings import Settings
from tests.integration.ingest_support import make_topics, running_receiver, storescu, with_receiver

#: What every stored instance's record holds (metrics/stages.py).
STAGES = {"receive", "pdv", "parse", "write", "file_sync", "place", "event", "folder_sync", "ack", "folder_wait",
          "unmark", "bookkeeping", "response", "pdus"}


def test_every_instance_gets_its_stages_and_they_fit_in_its_cycle(settings: Settings, tmp_path: Path) -> None:
    s = with_receiver(settings, engine="native", stage_timing_dir=tmp_path / "stages")
    make_topics(s)
    make_corpus(tmp_path / "corpus", 12, studies=1, series_per_study=2)
    files = sorted((tmp_path / "corpus").rglob("*.dcm"))
    assert len(files) == 12
    with running_receiver(s):
        run = storescu(s.receiver.port, files)
        assert run.returncode == 0, run.stderr
        assert not (tmp_path / "stages").exists()  # written at stop, not on the way
    (written,) = (tmp_path / "stages").glob("stages-*.json")
    records = json.loads(written.read_text())["records"]
    assert len(records) == len(files)
    for record in records:
        assert set(record) >= STAGES, record
        assert all(isinstance(v, int) and v >= 0 for v in record.values())
        assert record["ack"] > 0 and record["file_sync"] > 0
    # every instance after the first has its cycle (response to response), and the stages fit in it
    cycles = [r for r in records if "cycle" in r]
    assert len(cycles) == len(files) - 1
    for record in cycles:
        named = sum(v for k, v in record.items() if k not in {"cycle", "pdus", "folder_sync"})
        assert named <= record["cycle"]


def test_off_by_default_nothing_is_timed(settings: Settings) -> None:
    from dicomflow.receiver.scp import Receiver

    s = with_receiver(settings, engine="native")
    receiver = Receiver(s)
    try:
        assert receiver.service.stages is None
    finally:
        receiver.stop(announce=False)
