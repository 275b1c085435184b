"""The fault suite's own logic: generator, kill schedule, RSS verdict, damage, fuzz judging, supervisor."""

from __future__ import annotations

import random
import re
import sys
import time
from pathlib import Path

import pydicom
import pytest

from dicomflow.extract.header import extract_file
from dicomflow_faults.checks import DeadLetter
from dicomflow_faults.fuzz import CASE_HEADER, Case, damage, hypothesis_payloads, judge
from dicomflow_faults.instances import build_template, generate, make_uid, spread
from dicomflow_faults.scenario import KINDS, plan
from dicomflow_faults.soak import RssSample, flatness
from dicomflow_faults.supervisor import Component, Supervisor, process_tree

#: A UID: dot-separated numbers, no component with a leading zero (PS3.5 9.1).
UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


# --------------------------------------------------------------------------- instances


def test_make_uid_is_a_valid_fixed_width_uid() -> None:
    uids = {make_uid(12345678, kind, n) for kind in (1, 2, 3) for n in (0, 1, 99, 7_999_999_999)}
    assert len(uids) == 12
    for uid in uids:
        assert UID_RE.match(uid), uid
        assert len(uid) == 47


@pytest.mark.parametrize(("run", "kind", "counter"), [(1234567, 1, 0), (12345678, 0, 0), (12345678, 1, 8 * 10**9)])
def test_make_uid_refuses_values_that_would_change_its_width(run: int, kind: int, counter: int) -> None:
    with pytest.raises(ValueError):
        make_uid(run, kind, counter)


def test_spread_sums_to_the_total_over_many_uneven_series() -> None:
    parts = list(spread(1000, random.Random(1)))
    assert sum(n for _, _, n in parts) == 1000
    assert len({s for _, s, _ in parts}) == len(parts) > 10
    assert len({n for _, _, n in parts}) > 3  # uneven
    assert len({study for study, _, _ in parts}) < len(parts)  # some studies have several series


def test_generated_files_are_valid_dicom_matching_their_events(tmp_path: Path) -> None:
    gen = generate(tmp_path, 120, seed=3)
    assert len(gen.instances) == 120 == len(gen.sop_uids)
    assert sum(s.instances for s in gen.series) == 120
    for inst in gen.instances[::17]:
        ds = pydicom.dcmread(inst.path)
        e = inst.event
        assert ds.SOPInstanceUID == e.sop_uid == ds.file_meta.MediaStorageSOPInstanceUID
        assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID) == (e.study_uid, e.series_uid, e.patient_id)
        assert ds.AccessionNumber == e.accession_number
        assert len(ds.PixelData) == 32 * 32 * 2
        assert e.file_size == inst.path.stat().st_size
        assert Path(e.file_path) == inst.path
        state, image = extract_file(inst.path, "default")
        assert (image.sop_uid, image.series_uid, state.study_uid) == (e.sop_uid, e.series_uid, e.study_uid)
        assert image.width == image.columns == 32
    numbers = sorted(int(pydicom.dcmread(i.path).InstanceNumber) for i in gen.instances
                     if i.event.series_uid == gen.series[0].series_uid)
    assert numbers == list(range(1, gen.series[0].instances + 1))


def test_two_runs_never_share_a_uid(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", 30, seed=1)
    b = generate(tmp_path / "b", 30, seed=1)
    assert not a.sop_uids & b.sop_uids


@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_template_placeholders_occur_exactly_where_expected(modality: str) -> None:
    template = build_template(modality)
    assert template.data[128:132] == b"DICM"
    filled = template.fill(study_uid=make_uid(11111111, 1, 5), series_uid=make_uid(11111111, 2, 5),
                           sop_uid=make_uid(11111111, 3, 5), patient_id="P" * 16, accession="A" * 16,
                           series_number=3, instance_number=42)
    assert len(filled) == len(template.data)
    for raw in template.placeholders.values():
        assert raw not in filled


# --------------------------------------------------------------------------- schedule


def test_plan_spreads_each_kind_over_the_load_reproducibly() -> None:
    faults = plan(KINDS, 2, 20000, random.Random(5))
    assert sorted(f.kind for f in faults) == sorted(list(KINDS) * 2)
    thresholds = [f.at_acked for f in faults]
    assert thresholds == sorted(thresholds)
    assert thresholds[0] >= 0.05 * 20000 and thresholds[-1] <= 0.85 * 20000
    assert all(0.5 <= f.down_s <= 3.0 and 0 <= f.delay_s <= 1 for f in faults)
    again = plan(KINDS, 2, 20000, random.Random(5))
    assert [(f.kind, f.at_acked) for f in again] == [(f.kind, f.at_acked) for f in faults]
    assert plan(KINDS, 0, 100, random.Random(1)) == []


# --------------------------------------------------------------------------- soak verdict


def _sample(t: float, rows: int, main_mib: float, tree_mib: float | None = None) -> RssSample:
    return RssSample(t, rows, int(main_mib * 1024), int((tree_mib or main_mib * 2) * 1024))


def test_flatness_ignores_the_warm_up_and_uses_medians() -> None:
    samples = [_sample(0, 0, 40), _sample(1, 100, 70)]  # warm-up: growth here does not count
    samples += [_sample(2 + i, 300 + 100 * i, 80 + (30 if i == 3 else 0)) for i in range(7)]  # one spike
    base_main, end_main, _, _ = flatness(samples, 1000, 0.2)
    assert base_main == 80 * 1024
    assert end_main == 80 * 1024


def test_flatness_ends_when_the_last_event_is_indexed() -> None:
    samples = [_sample(i, 200 * (i + 1), 100) for i in range(10)]  # 2000 events, done at i = 9
    samples += [_sample(10 + i, 2000, 60) for i in range(5)]  # idle afterwards: memory given back
    base_main, end_main, _, _ = flatness(samples, 2000, 0.2)
    assert base_main == end_main == 100 * 1024


def test_flatness_sees_a_leak() -> None:
    samples = [_sample(i, i * 1000, 80 + i * 5) for i in range(20)]
    base_main, end_main, _, _ = flatness(samples, 20000, 0.2)
    assert (end_main - base_main) / 1024 == 65  # median of i=4..6 -> median of i=17..19


# --------------------------------------------------------------------------- fuzz


def test_damage_changes_the_header_and_is_reproducible() -> None:
    data = (Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm").read_bytes()
    outcomes = [damage(data, random.Random(i)) for i in range(40)]
    assert all(out != data for _, out in outcomes)
    assert {how for how, _ in outcomes} == {"truncated", "bit-flipped", "truncated+bit-flipped"}
    for how, out in outcomes:
        if "truncated" in how:
            assert len(out) < len(data)
        else:
            assert len(out) == len(data) and out[:128] == data[:128]
    assert damage(data, random.Random(7)) == damage(data, random.Random(7))


def test_hypothesis_payloads_cover_every_family(tmp_path: Path) -> None:
    event = generate(tmp_path, 1, seed=1).instances[0].event
    payloads = hypothesis_payloads(150, 42, event)
    assert len(payloads) >= 100
    labels = {label for label, _ in payloads}
    assert labels == {"random-bytes", "random-json", "truncated-event", "mutated-event"}
    assert all(isinstance(value, bytes) for _, value in payloads)


def _letter(key: bytes | None, case: int | None, reason: str = "why", error_class: str = "wire-format") -> DeadLetter:
    headers = {CASE_HEADER: str(case)} if case is not None else {}
    return DeadLetter(key, b"", error_class, reason, None, headers)


def test_judge_tells_stuck_inputs_from_lost_ones() -> None:
    cases = [Case(i, "payload", "random-json", b"[]") for i in range(4)]
    for case, offset in zip(cases, (0, 1, 2, 3), strict=True):
        case.position = (0, offset)
    # Committed up to offset 2: #0 and #1 were processed, #2 is where the consumer is stuck.
    judge(cases, [_letter(None, 0)], rows=set(), committed={0: 2})
    assert [c.outcome for c in cases] == ["dead-lettered", "lost", "unprocessed", "unprocessed"]


def test_judge_matches_dead_letters_and_rows_to_cases() -> None:
    cases = [
        Case(0, "payload", "random-bytes", b"\x00"),
        Case(1, "file", "bit-flipped x", b"{}", sop_uid="1.2.3"),  # still parses: indexed
        Case(2, "file", "truncated y", b"{}", sop_uid="1.2.4"),  # neither: lost
        Case(3, "payload", "mutated-event", b"{}", sop_uid="1.2.5", valid_event=False),  # row but invalid: lost
        Case(4, "special", "empty file", b"{}", sop_uid="1.2.6"),
    ]
    dead = [_letter(None, 0), _letter(b"fuzz-4", None, reason=""), _letter(b"other", None)]
    without_reason = judge(cases, dead, rows={"1.2.3", "1.2.5"})
    assert [c.outcome for c in cases] == ["dead-lettered", "persisted", "lost", "lost", "dead-lettered"]
    assert without_reason == 1


# --------------------------------------------------------------------------- supervisor


_SLEEPER = [sys.executable, "-c"]
_WITH_CHILD = ("import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")


def _wait_for(predicate: object, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_kill_takes_the_whole_process_group(tmp_path: Path) -> None:
    sup = Supervisor()
    c = sup.add(Component("sleeper", [_WITH_CHILD], {}, tmp_path, tmp_path, program=_SLEEPER))
    c.start()
    assert _wait_for(lambda: len(process_tree(c.pid or 0)) == 2)
    tree = process_tree(c.pid or 0)
    sup.kill("sleeper")
    assert _wait_for(lambda: all(not Path(f"/proc/{p}").exists()
                                 or Path(f"/proc/{p}/stat").read_text().split(") ")[1][0] == "Z" for p in tree))
    assert [e.expected for e in sup.exits] == [True]
    assert not sup.crashes()


def test_an_exit_nobody_asked_for_is_a_crash_and_is_restarted(tmp_path: Path) -> None:
    sup = Supervisor(restart_crashed=True)
    c = sup.add(Component("crasher", ["import sys; print('boom'); sys.exit(3)"], {}, tmp_path, tmp_path,
                          program=_SLEEPER))
    c.start()
    sup.start_watching()
    try:
        assert _wait_for(lambda: len(sup.crashes()) >= 2)
    finally:
        sup.stop_watching()
        c.terminate(5)
    crash = sup.crashes()[0]
    assert crash.returncode == 3 and "boom" in crash.log_tail
    assert c.starts >= 2


def test_a_finite_component_may_end_cleanly(tmp_path: Path) -> None:
    sup = Supervisor(restart_crashed=True)
    c = sup.add(Component("idle", ["pass"], {}, tmp_path, tmp_path, program=_SLEEPER, finite=True))
    c.start()
    sup.start_watching()
    try:
        assert c.wait(10) == 0
        time.sleep(0.5)
    finally:
        sup.stop_watching()
    assert not sup.crashes() and c.starts == 1


# --------------------------------------------------------------------------- what the fuzz phase found


def test_damaged_sample_files_are_poison_never_io_errors(tmp_path: Path) -> None:
    """A damaged file must be refused as poison (ExtractError), never raise a bare OSError.

    The consumer takes an OSError for storage trouble and retries the batch
    forever, blocking its partitions: pydicom raises ``OSError("No tag to read
    at file position ...")`` (errno None) for some bit-flipped headers, which
    the fuzz phase of the suite ran into (seed 2026 reproduces two of them).
    """
    import json
    import warnings

    from dicomflow.errors import ExtractError
    from dicomflow_faults.fuzz import sample_files, usable_samples
    from dicomflow_faults.fuzz.builder import CaseBuilder

    root = tmp_path / "root"
    root.mkdir()
    builder = CaseBuilder(root, tmp_path, 2026)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builder.damaged_files(200, usable_samples(sample_files()))
        io_errors = []
        for case in builder.cases:
            path = json.loads(case.value)["file_path"]
            try:
                extract_file(path, "default")
            except ExtractError:
                pass
            except OSError as exc:
                io_errors.append(f"{case.label}: {exc}")
    assert not io_errors


def test_warehouse_phase_counts_in_the_suite_verdict() -> None:
    import io

    from dicomflow_faults.checks import Check
    from dicomflow_faults.report import SuiteReport
    from dicomflow_faults.warehouse import SinkKill, WarehouseFaultResult

    assert SinkKill(1.0, 500, 1000).mid_run
    assert not SinkKill(1.0, 0, 1000).mid_run and not SinkKill(1.0, 1000, 1000).mid_run
    wh = WarehouseFaultResult(events=1000, kills_wanted=1, kills=[SinkKill(1.0, 500, 1000)], starts=2,
                              expected_rows={"receipts": 10}, rows={"receipts": 10}, exit_code=0,
                              checks=[Check("warehouse: x", True, "ok")])
    report = SuiteReport(seed=1, options={}, warehouse=wh)
    out = io.StringIO()
    report.print(out)
    assert report.passed and "Warehouse sink:     1 SIGKILLs mid-run over 1000 events, 0 lost" in out.getvalue()
    assert report.as_json()["warehouse"]["kills_mid_run"] == 1
    wh.lost = 2
    assert not report.passed and report.lost == 2
