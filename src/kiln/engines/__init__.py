"""Engines execute a notebook's cells and report events; see :mod:`kiln.engines.base`."""

from __future__ import annotations

from kiln.engines.base import (
    CellFinished,
    CellOutput,
    CellStarted,
    Engine,
    Event,
    ExecuteOptions,
    ExecutionOutcome,
    KernelReady,
)

__all__ = [
    "CellFinished",
    "CellOutput",
    "CellStarted",
    "Engine",
    "Event",
    "ExecuteOptions",
    "ExecutionOutcome",
    "KernelReady",
    "get_engine",
]

#: engine name -> "module:Class"; data, not an import-time registry
ENGINES = {
    "kernel": "kiln.engines.kernel:KernelEngine",
    "fake": "kiln.engines.fake:FakeEngine",
}


def get_engine(name: str) -> Engine:
    """Instantiate an engine by name (imports it on first use)."""
    import importlib

    from kiln.errors import UsageError

    try:
        target = ENGINES[name]
    except KeyError:
        raise UsageError(
            f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}"
        ) from None
    module, _, cls = target.partition(":")
    engine: Engine = getattr(importlib.import_module(module), cls)()
    return engine
