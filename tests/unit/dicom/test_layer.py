"""One DICOM layer: no module outside ``dicom/`` walks elements, decodes values or redefines the constants."""

from __future__ import annotations

import re
from pathlib import Path

import dicomflow

PACKAGE = Path(dicomflow.__file__).resolve().parent
ROOT = PACKAGE.parent.parent

#: What only the DICOM layer may write: element headers read with struct, the undefined length, VR sets,
#: transfer-syntax constants, pydicom's readers and character-set decoding.
SIGNS = {
    "an element header read": re.compile(r"""Struct\(["'][<>]HH(2s|I)["']\)(?=[\s\S]*\.unpack)"""),
    "the undefined length": re.compile(r"0x[fF]{8}\b"),
    "a VR set": re.compile(r"""b["'](OB|OW|SQ|UN)["']\s*,"""),
    "a transfer syntax constant": re.compile(r"^\w*VR_(LE|BE)\w*\s*(:\s*\w+\s*)?=", re.MULTILINE),
    "pydicom's element reader": re.compile(r"\bread_partial\b|\bread_dataset\(fp"),
    "character-set decoding": re.compile(r"\b(decode_bytes|convert_encodings)\b"),
}


def _modules() -> list[Path]:
    return sorted(p for p in (*PACKAGE.rglob("*.py"), *(ROOT / "faults").rglob("*.py"))
                  if "dicom" not in p.relative_to(PACKAGE if p.is_relative_to(PACKAGE) else ROOT).parts[:1])


def test_only_the_dicom_layer_walks_elements_and_decodes_values() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in _modules()
        for what, sign in SIGNS.items()
        if sign.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_check_sees_the_dicom_layer_itself() -> None:
    """The patterns do match the code they guard (else the test above could not fail)."""
    layer = {what for what, sign in SIGNS.items()
             for path in (PACKAGE / "dicom").glob("*.py") if sign.search(path.read_text(encoding="utf-8"))}
    assert layer == set(SIGNS)
