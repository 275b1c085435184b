"""The package's layout holds: who may import whom, no import cycles, light modules stay light.

The layers (lowest first), as docs/architecture.md describes them:

- the foundation, imported by all: ``errors``, ``models``, ``settings``;
- shared floors: ``dicom`` (the one DICOM layer), ``audit``, ``metrics``,
  ``stack``, ``corpus``, then ``kafka``, ``store``, ``extract`` and
  ``imaging`` (pixel work: rendering, transcoding; both use ``dicom``) and
  ``ingest`` (what every way in shares: it publishes store events through
  ``kafka``);
- the stages: ``receiver``, ``scanner`` and ``web`` (ways in; ``web`` also
  reads the index through ``store``), ``pipeline`` (the consumer),
  ``images`` (the image workers), ``warehouse`` (the analytics sink, DDL and
  report), ``dlq`` (the operator's dead-letter tools); a stage never imports
  a sibling stage;
- ``demo``, which runs the stages as their own processes and ends with the
  warehouse's report, so it may read the warehouse (and no other stage);
- ``cli`` on top: it may import everything and nothing imports it.

A new subpackage must be added to :data:`ALLOWED` on purpose: that is where
its place in the house is decided.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dicomflow

PACKAGE = Path(dicomflow.__file__).resolve().parent

FOUNDATION = frozenset({"errors", "models", "settings"})
WAYS_IN = FOUNDATION | {"dicom", "ingest", "kafka", "audit"}

#: unit (first name under dicomflow) -> the units it may import.
ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "models": frozenset({"errors"}),
    "settings": frozenset({"errors"}),
    "dicom": FOUNDATION,
    "audit": FOUNDATION,
    "metrics": FOUNDATION,
    "stack": FOUNDATION,
    # the storage layer; uses ingest's atomic write until that moves down here with the rewiring (issue 18)
    "blobs": FOUNDATION | {"ingest"},
    "corpus": FOUNDATION,
    "kafka": FOUNDATION,
    "store": FOUNDATION,
    "extract": FOUNDATION | {"dicom"},
    "imaging": FOUNDATION | {"dicom"},
    "ingest": FOUNDATION | {"dicom", "audit", "kafka", "blobs"},  # the S3 backend's placement (placement_s3)
    "receiver": WAYS_IN | {"metrics", "qr"},  # its Prometheus metrics (metrics/receiver.py); C-FIND, C-MOVE, C-GET (qr/)
    # query/retrieve over DIMSE: the SQL over store's matching, the objects, transcoding, the tenant rule, its audit
    "qr": FOUNDATION | {"dicom", "store", "blobs", "imaging", "audit", "ingest"},
    "scanner": WAYS_IN,
    "web": WAYS_IN | {"store", "imaging", "metrics", "blobs"},  # blobs: instances through the storage layer
    "pipeline": FOUNDATION | {"extract", "kafka", "store", "audit", "metrics", "blobs"},  # objects by ranged reads
    "images": FOUNDATION | {"imaging", "ingest", "kafka", "store", "metrics", "blobs"},
    "warehouse": FOUNDATION | {"kafka", "store", "models", "audit", "metrics", "dicom"},
    "demo": FOUNDATION | {"corpus", "kafka", "stack", "store", "warehouse", "demo_s3", "web"},  # web: the viewer URL
    "demo_s3": FOUNDATION | {"blobs", "stack"},  # demo --s3's check of the bucket
    "dlq": FOUNDATION | {"kafka", "store", "audit", "metrics"},
    # after a delete: the change log to Kafka, the objects removed through the storage layer (issue 20)
    "lifecycle": FOUNDATION | {"kafka", "store", "blobs"},
    # an operator's tool like dlq: the storage layer and the index's location columns
    "storage_migrate": FOUNDATION | {"blobs", "store"},
    "cli": frozenset({"*"}),
    "__main__": frozenset({"cli"}),
}

@dataclass(frozen=True)
class Import:
    source: str  # dotted module name of the importer
    target: str  # dotted module name imported (a module of the package, as far as it resolves)
    line: int
    at_import_time: bool  # module level, not in a function and not under TYPE_CHECKING
    type_only: bool = False  # under ``if TYPE_CHECKING:`` (read by the type checker, never run)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(name: str) -> str:
    """The longest prefix of ``name`` that is a module of the package."""
    parts = name.split(".")
    while parts and ".".join(parts) not in MODULES:
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str) -> Iterator[Import]:
    path = MODULES[module]
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, at_import_time: bool, type_only: bool = False) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            lazy = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if lazy:
                yield from visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                yield from visit(child, False, at_import_time)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(module, alias.name, child.lineno, at_import_time, type_only)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".")
                    base = base if is_package else base[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    prefix = ".".join(base + ([child.module] if child.module else []))
                else:
                    prefix = child.module or ""
                for alias in child.names:
                    # "from pkg import sub" imports the submodule when there is one.
                    yield Import(module, f"{prefix}.{alias.name}", child.lineno, at_import_time, type_only)
            else:
                yield from visit(child, at_import_time, type_only)

    seen: set[Import] = set()
    for found in visit(ast.parse(path.read_text(encoding="utf-8")), True):
        if found.target == "dicomflow" or found.target.startswith("dicomflow."):
            found = Import(found.source, resolve(found.target), found.line, found.at_import_time, found.type_only)
        elif found.target.split(".")[0] not in {"dicomflow_faults", "tests", "benchmarks"}:
            continue
        if found not in seen:
            seen.add(found)
            yield found


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "(package)"


def test_every_unit_has_a_place_in_the_table() -> None:
    units = {unit(m) for m in MODULES} - {"(package)"}
    assert units <= set(ALLOWED), f"add {sorted(units - set(ALLOWED))} to ALLOWED (where may it import from?)"


def test_imports_follow_the_layers() -> None:
    wrong: list[str] = []
    for module in MODULES:
        source = unit(module)
        allowed = ALLOWED.get(source, frozenset())
        for imp in imports_of(module):
            if not imp.target.startswith("dicomflow"):
                wrong.append(f"{module}:{imp.line} imports {imp.target} (outside the installed package)")
                continue
            target = unit(imp.target)
            if target in (source, "(package)") or "*" in allowed or target in allowed:
                continue
            wrong.append(f"{module}:{imp.line} imports {imp.target} ({source} may import {sorted(allowed)})")
    assert not wrong, "\n".join(wrong)


def test_no_stage_imports_the_cli() -> None:
    offenders = [f"{m}:{i.line}" for m in MODULES if unit(m) not in {"cli", "__main__"}
                 for i in imports_of(m) if unit(i.target) == "cli"]
    assert not offenders


def import_graph(*, type_only: bool) -> dict[str, set[str]]:
    """module -> the modules it imports at import time (and under ``if TYPE_CHECKING:`` when ``type_only``)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module in MODULES:
        for imp in imports_of(module):
            if (imp.at_import_time or (type_only and imp.type_only)) and imp.target in graph and imp.target != module:
                graph[module].add(imp.target)
    return graph


def cycles_in(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles a depth-first walk meets (each as a path that ends where it began)."""
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module)
    return cycles


def test_no_import_cycles_at_import_time() -> None:
    cycles = cycles_in(import_graph(type_only=False))
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_no_import_cycles_through_type_only_imports() -> None:
    """A circle closed by an ``if TYPE_CHECKING:`` import is still two modules that cannot be read apart."""
    cycles = cycles_in(import_graph(type_only=True))
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_wrong_import() -> None:
    """The checks above can fail: the walker finds imports at import time, lazily and type-only, and circles."""
    found = list(imports_of("dicomflow.cli.scp"))
    assert any(i.target == "dicomflow.cli.root" and i.at_import_time for i in found)
    assert any(i.target.startswith("dicomflow.receiver") and not i.at_import_time for i in found)
    assert "cli" not in ALLOWED["receiver"]
    typed = [i for i in imports_of("dicomflow.web.context") if i.type_only]
    assert any(i.target == "dicomflow.kafka.producer" and not i.at_import_time for i in typed)
    assert cycles_in({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles_in({"a": {"b"}, "b": set()}) == []


def _modules_loaded_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_parse_workers_import_no_kafka_client() -> None:
    loaded = _modules_loaded_by("dicomflow.pipeline.parse_worker")
    assert "dicomflow.pipeline.parse_worker" in loaded
    assert "confluent_kafka" not in loaded
    assert not {m for m in loaded if m.startswith("psycopg")}
    assert "confluent_kafka" in _modules_loaded_by("dicomflow.kafka.consumer")  # the check can fail


def test_shared_types_are_light() -> None:
    for module in ("dicomflow.kafka.records", "dicomflow.pipeline.types"):
        loaded = _modules_loaded_by(module)
        assert module in loaded
        assert "confluent_kafka" not in loaded, module
        assert "concurrent.futures.process" not in loaded, module
