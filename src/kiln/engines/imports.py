"""Which modules a notebook imports at the top level (found statically, never executed), and
which of them the fork engine's warm parent may import before it forks.

Runs start with numpy, pandas or matplotlib already loaded, but only libraries are pre-imported:
a module is pre-imported when, resolved with the run's own ``sys.path`` (what a kernel started
in the run's working directory would have), it comes from the standard library or a
site-packages folder. A project's own module (``helpers.py`` beside the notebook, a package in
the working directory or on ``PYTHONPATH``) is imported by each run's child, as a kernel would
import it: its import-time side effects happen once per run, and a file of the run's working
directory shadows what it shadows in a kernel.
"""

from __future__ import annotations

import ast
import contextlib
import os
import site
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from importlib.machinery import BuiltinImporter, FrozenImporter, PathFinder
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


_SITE_FOLDERS = ("site-packages", "dist-packages")


def run_sys_path(base: list[str], *, safe_path: bool) -> list[str]:
    """The ``sys.path`` a kernel has: ``base`` with ``''`` (its working directory) inserted
    before the first site-packages folder, after the standard library.

    This is what IPython's ``InteractiveShellApp.init_path`` does for ipykernel (since IPython
    7.2); ``safe_path`` (``PYTHONSAFEPATH``, ``-P``) leaves the working directory out.
    """
    path = list(base)
    if "" in path or safe_path:
        return path
    sites = [i for i, e in enumerate(path) if os.path.basename(e) in _SITE_FOLDERS]
    path.insert(sites[0] if sites else 0, "")
    return path


def library_dirs() -> tuple[str, ...]:
    """Folders whose modules are libraries: the standard library and site-packages."""
    found: list[str] = []
    paths = sysconfig.get_paths()
    found += [paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths]
    with contextlib.suppress(Exception):  # absent or broken in some embedded Pythons
        found += site.getsitepackages()
        found.append(site.getusersitepackages())
    found.extend(p for p in sys.path if os.path.basename(p) in _SITE_FOLDERS)
    return tuple(dict.fromkeys(os.path.realpath(p) for p in found if p))


def _inside(path: str, folders: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real == f or real.startswith(f + os.sep) for f in folders)


def is_library(top: str, path: list[str], cwd: str, libraries: tuple[str, ...]) -> bool:
    """Whether top-level module ``top``, resolved as a run in ``cwd`` would resolve it with
    ``path`` (``''`` meaning ``cwd``), is a library the warm parent may import.

    Modules found by other finders (editable installs' import hooks) are not: the child
    imports them.
    """
    if BuiltinImporter.find_spec(top) is not None or FrozenImporter.find_spec(top) is not None:
        return True
    entries = [cwd if entry == "" else entry for entry in path]
    spec = PathFinder.find_spec(top, entries)
    if spec is None:
        return False
    places = [spec.origin] if spec.origin and spec.has_location else []
    places += list(spec.submodule_search_locations or [])
    return bool(places) and all(_inside(p, libraries) for p in places)


def shadowable(name: str, path: list[str]) -> bool:
    """Whether imported top-level module ``name`` could be shadowed by a file in a kernel's
    working directory: it is not built in, and ``path`` puts it after ``''``."""
    origin = getattr(sys.modules.get(name), "__file__", None)
    if not origin or "" not in path:
        return False
    before_cwd = tuple(os.path.realpath(p) for p in path[: path.index("")] if p)
    return not _inside(origin, before_cwd)


def shadowed(names: Iterable[str], cwd: str) -> list[str]:
    """Which of the (shadowable) modules ``names`` a module in ``cwd`` shadows for this run."""
    return [name for name in names if PathFinder.find_spec(name, [cwd]) is not None]
