"""Imports go one way, down the layers of docs/architecture.md.

Every ``import kiln.X`` in ``src/kiln`` (at module level or inside a function) must name a
module of a lower layer or of its own package. Imports only for type checking
(``if TYPE_CHECKING:``) are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import kiln

#: lowest first; a unit is a package (``notebook/``) or a top-level module (``runner``)
LAYERS: list[set[str]] = [
    {"walkup"},
    {"errors", "units", "textutil", "recording", "processes", "provenance"},
    {"yamlio", "remote", "options"},
    {"flags", "notebook/", "project/"},
    {"parameters/", "engines/", "store/"},
    {"lint/", "convert/", "mlflow_export"},
    {"redact"},
    {"events", "cancel", "runlog", "failure", "request", "capture"},
    {"runrecord"},
    {"runner"},
    {"sweeps/", "queue/"},
    {"pipeline/"},
    {"liveoutput", "report/"},
    {"testing/", "papermill", "api"},
    {"tracking/", "scheduler/", "integrations/"},
    {"server/"},
    {"ui/"},
    {"cli/", "kiln"},
]
#: the one import that goes up, by name: the server's app factory mounts the web UI's pages
#: (the UI is built on the server's accounts and run path, so it sits above it)
UPWARD = {("server/app.py", "kiln.ui")}
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
ROOT = Path(kiln.__file__).resolve().parent


def _unit(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "kiln"
    return parts[1] + "/" if (ROOT / parts[1]).is_dir() else parts[1]


def _runtime_imports(tree: ast.Module) -> list[tuple[int, str]]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name.startswith("kiln.")]


def test_every_unit_has_a_layer() -> None:
    units = {
        _unit("kiln." + ".".join(p.relative_to(ROOT).with_suffix("").parts))
        for p in ROOT.rglob("*.py")
        if p.name != "__init__.py" or p.parent != ROOT
    }
    assert units - set(RANK) == set()


def test_imports_go_down() -> None:
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = ".".join(("kiln", *parts)).removesuffix(".__init__")
        here = _unit(module)
        for line, name in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            there = _unit(name)
            if (path.relative_to(ROOT).as_posix(), name) in UPWARD:
                continue
            if there != here and RANK[there] >= RANK[here]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({here}) imports {name} ({there})")
    assert wrong == [], "imports that go up or sideways:\n" + "\n".join(wrong)


def test_the_upward_imports_are_used() -> None:
    """An exception that no longer happens is removed from UPWARD."""
    for file, name in UPWARD:
        tree = ast.parse((ROOT / file).read_text(encoding="utf-8"))
        assert name in [found for _line, found in _runtime_imports(tree)], (file, name)
