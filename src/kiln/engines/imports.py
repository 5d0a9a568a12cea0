"""Which modules a notebook imports at the top level (found statically, never executed).

The fork engine's warm parent imports them before it forks, so runs start with numpy,
pandas or matplotlib already loaded.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from typing import Any

#: never imported in the warm parent: they start threads or hold state that must not be
#: shared across fork (the child imports them itself, as a kernel would)
NO_PRELOAD = frozenset(
    {
        "multiprocessing",
        "concurrent",
        "threading",
        "asyncio",
        "dask",
        "distributed",
        "ray",
        "pyspark",
        "torch",
        "tensorflow",
        "jax",
        "kiln",
        "ipywidgets",
        "tqdm",
        "joblib",
        "zmq",
        "IPython",
        "ipykernel",
        "sqlite3",
        "socket",
        "requests",
        "urllib3",
        "httpx",
    }
)


def notebook_imports(cells: Iterable[Mapping[str, Any]]) -> list[str]:
    """Modules imported by top-level ``import`` statements of the code cells, in order."""
    seen: dict[str, None] = {}
    for cell in cells:
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(source)
        lines = [ln for ln in str(source).splitlines() if not ln.lstrip().startswith(("%", "!"))]
        try:
            tree = ast.parse("\n".join(lines))
        except SyntaxError:
            continue
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            for name in names:
                seen.setdefault(name, None)
    return list(seen)


def preloadable(modules: Iterable[str]) -> list[str]:
    """The modules a warm parent may import before forking."""
    return [m for m in modules if m.split(".")[0] not in NO_PRELOAD]
