"""``dicomflow extract``: one JSON object per file, exit code 1 when any file failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from dicomflow.models import DicomImageMeta, DicomStateMeta, decode
from tests.conftest import PYDICOM_DATA
from tests.unit.dicom_files import ct_dataset, write


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DICOMFLOW_")}
    return subprocess.run(
        [sys.executable, "-c", "from dicomflow.cli import main; main()", "extract", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )


def test_prints_records_and_errors_as_json_lines(tmp_path: Path) -> None:
    good = write(tmp_path / "good.dcm", ct_dataset())
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"not dicom at all")
    result = run(str(good), str(bad), "--tenant", "acme", cwd=tmp_path)

    assert result.returncode == 1
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["path"] == str(good)
    state = decode(json.dumps(first["state"]), DicomStateMeta)
    image = decode(json.dumps(first["image"]), DicomImageMeta)
    assert (state.tenant_id, state.patient_id, image.width, image.pixel_data_location) == ("acme", "P-1", 4, str(good))
    assert second == {"path": str(bad), "error": "not a DICOM file: no DICM prefix and no DICOM dataset at the start of the file"}


def test_exit_code_zero_when_every_file_extracts_and_folders_expand(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    (folder / "series").mkdir(parents=True)
    write(folder / "a.dcm", ct_dataset(SOPInstanceUID="1.2.3.1"))
    write(folder / "series" / "b.dcm", ct_dataset(SOPInstanceUID="1.2.3.2"))
    result = run(str(folder), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["image"]["sop_uid"] for line in lines] == ["1.2.3.1", "1.2.3.2"]
    assert {line["state"]["tenant_id"] for line in lines} == {"default"}  # storage.default_tenant


def test_multilingual_names_come_out_as_unicode(tmp_path: Path) -> None:
    result = run(str(PYDICOM_DATA / "charset_files" / "chrI2.dcm"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"]["patient_name"] == "Hong^Gildong=洪^吉洞=홍^길동"
