"""The tests mirror ``src/dicomflow/``: a test of ``pkg/module.py`` lives in ``tests/<kind>/pkg/test_module.py``.

So a reader finds the tests of a module without searching, and a new test
file at the top of ``tests/unit`` or ``tests/integration`` fails here.
"""

from __future__ import annotations

from pathlib import Path

import dicomflow

PACKAGE = Path(dicomflow.__file__).resolve().parent
TESTS = Path(__file__).resolve().parents[1]

#: Folders that mirror no subpackage: the fault suite lives outside the package, in faults/.
OUTSIDE_THE_PACKAGE = {"faults"}
#: Tests at the top: of the top-level modules (corpus.py, errors.py, models.py) and of the whole tree.
TOP_LEVEL = {"test_corpus.py", "test_errors.py", "test_models.py", "test_imports.py", "test_sizes.py", "test_layout.py"}


def _subpackages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def test_every_test_folder_names_a_subpackage() -> None:
    allowed = _subpackages() | OUTSIDE_THE_PACKAGE
    for kind in ("unit", "integration"):
        folders = {p.name for p in (TESTS / kind).iterdir() if p.is_dir() and p.name != "__pycache__"}
        stray = sorted(folders - allowed)
        assert not stray, f"tests/{kind}/ folders that mirror no src/dicomflow subpackage: {stray}"
        for name in folders:
            assert (TESTS / kind / name / "__init__.py").is_file(), f"tests/{kind}/{name}/ lacks __init__.py"


def test_no_test_file_sits_at_the_top() -> None:
    unit = {p.name for p in (TESTS / "unit").glob("test_*.py")}
    assert unit <= TOP_LEVEL, f"move into tests/unit/<package>/: {sorted(unit - TOP_LEVEL)}"
    integration = sorted(p.name for p in (TESTS / "integration").glob("test_*.py"))
    assert not integration, f"move into tests/integration/<package>/: {integration}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """A stray folder is seen: the set arithmetic above is not vacuous."""
    (tmp_path / "not_a_package").mkdir()
    folders = {p.name for p in tmp_path.iterdir() if p.is_dir()}
    assert folders - (_subpackages() | OUTSIDE_THE_PACKAGE) == {"not_a_package"}
    assert "ingest" in _subpackages() and "web" in _subpackages()
