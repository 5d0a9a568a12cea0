"""Notebooks as tests: ``kiln verify``'s logic, the pytest plugin and its helpers.

::

    run = run_notebook("report.ipynb", parameters={"n": 3})     # like kiln.run, nbval markers
    result = verify_notebook("report.ipynb")                     # fresh run vs saved outputs
    result.status, print(result.report())
    comparison = compare_notebooks("saved.ipynb", "fresh.ipynb")  # .ok, .divergence
    normalize_outputs(cell["outputs"], ignore=[r"took \\d+ ms"])  # volatile parts replaced

The pytest plugin (:mod:`kiln.testing.plugin`, registered as ``pytest11``) adds ``--kiln``,
``--kiln-compare``, ``--kiln-lint`` and the ``kiln_run`` fixture. Submodules load on first
use: pytest imports this package at every start-up.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.testing.compare import CellDivergence, Comparison, compare_notebooks
    from kiln.testing.config import ParameterSet, parameter_sets
    from kiln.testing.normalize import Normalizer, normalize_outputs
    from kiln.testing.plugin import KilnRun
    from kiln.testing.session import NotebookSession, run_notebook
    from kiln.testing.verify import VerifyResult, verify_notebook

__all__ = [
    "CellDivergence",
    "Comparison",
    "KilnRun",
    "Normalizer",
    "NotebookSession",
    "ParameterSet",
    "VerifyResult",
    "compare_notebooks",
    "normalize_outputs",
    "parameter_sets",
    "run_notebook",
    "verify_notebook",
]

_LAZY = {
    "CellDivergence": "compare",
    "Comparison": "compare",
    "compare_notebooks": "compare",
    "ParameterSet": "config",
    "parameter_sets": "config",
    "Normalizer": "normalize",
    "normalize_outputs": "normalize",
    "KilnRun": "plugin",
    "NotebookSession": "session",
    "run_notebook": "session",
    "VerifyResult": "verify",
    "verify_notebook": "verify",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"kiln.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
