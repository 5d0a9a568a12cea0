"""Pipelines of notebooks: ``kiln build`` runs a DAG of tasks with correct incremental re-runs.

::

    kiln.yaml pipelines: -> load_pipeline()      tasks expanded (grids), templates filled,
                                                 upstream resolved, cycles refused (located)
                         -> plan() / Status      up to date or not, and why (kiln status)
                         -> run_build() / Build  dependency order, N at a time, each task a
                                                 recorded run linked to one recorded build
                            executors: local (one runner, the fork engine's warm parents)
                                       dask  (requests shipped to distributed workers)

The command line is ``kiln build``, ``kiln status`` and ``kiln dag``; the Python API is
:func:`kiln.build` and :func:`kiln.status`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.pipeline.build import run_build
    from kiln.pipeline.check import BuildOptions, plan
    from kiln.pipeline.execute import abuild
    from kiln.pipeline.executors import Executor, LocalExecutor
    from kiln.pipeline.model import Pipeline, Task, load_pipeline
    from kiln.pipeline.result import (
        Build,
        BuildEvent,
        BuildObserver,
        BuildStarted,
        BuildWarning,
        Status,
        TaskEnded,
        TaskResult,
        TaskRetrying,
        TaskStarted,
        TaskStatus,
    )

__all__ = [
    "Build",
    "BuildEvent",
    "BuildObserver",
    "BuildOptions",
    "BuildStarted",
    "BuildWarning",
    "Executor",
    "LocalExecutor",
    "Pipeline",
    "Status",
    "Task",
    "TaskEnded",
    "TaskResult",
    "TaskRetrying",
    "TaskStarted",
    "TaskStatus",
    "abuild",
    "load_pipeline",
    "plan",
    "run_build",
]

_LAZY = {
    "BuildOptions": "kiln.pipeline.check",
    "plan": "kiln.pipeline.check",
    "abuild": "kiln.pipeline.execute",
    "run_build": "kiln.pipeline.build",
    "Executor": "kiln.pipeline.executors",
    "LocalExecutor": "kiln.pipeline.executors",
    "Pipeline": "kiln.pipeline.model",
    "Task": "kiln.pipeline.model",
    "load_pipeline": "kiln.pipeline.model",
    **{
        name: "kiln.pipeline.result"
        for name in (
            "Build",
            "BuildEvent",
            "BuildObserver",
            "BuildStarted",
            "BuildWarning",
            "Status",
            "TaskEnded",
            "TaskResult",
            "TaskRetrying",
            "TaskStarted",
            "TaskStatus",
        )
    },
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
