"""Kiln: run Jupyter notebooks as production work.

Imported inside user kernels (``import kiln; kiln.record(...)``), so this module stays light:
everything but ``record``, ``metric``, ``artifact`` and ``input`` loads on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.recording import artifact, input, metric, record

__version__ = "0.1.0"

__all__ = [
    "KilnError",
    "Run",
    "Secret",
    "__version__",
    "artifact",
    "build",
    "input",
    "list_runs",
    "metric",
    "read_run",
    "record",
    "run",
    "run_task",
    "status",
    "sweep",
]


class Secret(str):
    """Marks a parameter secret in a notebook's ``parameters`` cell::

        from kiln import Secret
        api_key: Secret = ""

    Kiln masks its value (``***``) in the output notebook, logs, reports, notifications and
    the run's record; the notebook receives the real value (a plain ``str``)."""

    __slots__ = ()


if TYPE_CHECKING:
    from kiln.api import build, list_runs, read_run, run, run_task, status, sweep
    from kiln.errors import KilnError
    from kiln.store.records import Run

_LAZY = {
    "run": "kiln.api",
    "read_run": "kiln.api",
    "list_runs": "kiln.api",
    "sweep": "kiln.api",
    "build": "kiln.api",
    "run_task": "kiln.api",
    "status": "kiln.api",
    "Run": "kiln.store.records",
    "KilnError": "kiln.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'kiln' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
