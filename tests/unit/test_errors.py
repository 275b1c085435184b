"""One error root: every exception class dicomflow defines derives from DicomflowError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import dicomflow
import dicomflow_faults
from dicomflow.errors import ConfigError, DicomflowError, ReceiverError, is_poison


def _modules(package: ModuleType) -> list[ModuleType]:
    """Every module of ``package`` (``__main__`` modules are left out: importing one runs it)."""
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue
        found.append(importlib.import_module(info.name))
    return found


def _exception_classes(modules: list[ModuleType]) -> list[type[BaseException]]:
    """The exception classes defined (not merely imported) in ``modules``, nested ones included."""
    out: list[type[BaseException]] = []

    def visit(owner: object, module_name: str) -> None:
        for value in vars(owner).values():
            if inspect.isclass(value) and value.__module__ == module_name and value not in out:
                if issubclass(value, BaseException):
                    out.append(value)
                visit(value, module_name)

    for module in modules:
        visit(module, module.__name__)
    return out


@pytest.mark.parametrize("package", [dicomflow, dicomflow_faults], ids=lambda p: p.__name__)
def test_every_exception_class_derives_from_the_one_root(package: ModuleType) -> None:
    classes = _exception_classes(_modules(package))
    stray = sorted(f"{c.__module__}.{c.__qualname__} ({', '.join(b.__name__ for b in c.__bases__)})"
                   for c in classes if not issubclass(c, DicomflowError))
    assert not stray, "derive these from dicomflow.errors.DicomflowError:\n" + "\n".join(stray)


def test_the_walk_finds_the_package_errors_and_would_see_a_stray_one() -> None:
    classes = _exception_classes(_modules(dicomflow))
    assert {DicomflowError, ConfigError, ReceiverError} <= set(classes)
    assert len(classes) > 30
    stray = type("Stray", (ValueError,), {"__module__": "tests.stray"})
    holder = ModuleType("tests.stray")
    holder.Stray = stray  # type: ignore[attr-defined]
    assert _exception_classes([holder]) == [stray] and not issubclass(stray, DicomflowError)


def test_errors_kept_as_value_errors_are_still_caught_as_such() -> None:
    """TruncatedError stays a ValueError: read_file_meta's callers catch its two kinds of failure as one."""
    from dicomflow.dicom.exceptions import TruncatedError
    from dicomflow.dicom.part10 import read_file_meta

    with pytest.raises(ValueError) as caught:
        read_file_meta(b"\x02\x00\x10\x00UI\x40\x00" + b"1.2", 0)
    assert isinstance(caught.value, TruncatedError) and isinstance(caught.value, DicomflowError)
    assert not is_poison(caught.value)  # a data set still arriving is cut off too
