"""Engines execute a notebook's cells and report events; see :mod:`kiln.engines.base`."""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.engines.base import (
        CellFinished,
        CellOutput,
        CellStarted,
        Engine,
        EngineSession,
        EngineSwitched,
        Event,
        ExecuteOptions,
        ExecutionOutcome,
        KernelReady,
    )

__all__ = [
    "ENGINES",
    "CellFinished",
    "CellOutput",
    "CellStarted",
    "Engine",
    "EngineSession",
    "EngineSwitched",
    "Event",
    "ExecuteOptions",
    "ExecutionOutcome",
    "KernelReady",
    "choose_engine",
    "fork_unsupported",
    "get_engine",
    "may_fork",
]


def __getattr__(name: str) -> Any:
    # the public names not defined here are kiln.engines.base's, loaded on first use: the
    # fork engine's warm parent imports this package (for its own modules) and needs none of
    # them, nor what they import
    if name in __all__:
        from kiln.engines import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: engine name -> "module:Class"; data, not an import-time registry
ENGINES = {
    "kernel": "kiln.engines.kernel:KernelEngine",
    "fork": "kiln.engines.fork:ForkEngine",
    "fake": "kiln.engines.fake:FakeEngine",
}


def may_fork(engine: str, *, prepare_only: bool = False) -> bool:
    """Whether a run that asks for ``engine`` may execute on the fork engine (it is ``fork``
    or ``auto``, the run executes, this is Linux): worth starting its warm parent early."""
    return engine in ("fork", "auto") and not prepare_only and sys.platform.startswith("linux")


def _unknown_engine(name: str) -> Exception:
    from kiln.errors import UsageError
    from kiln.options import ENGINE_CHOICES

    return UsageError(f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_CHOICES)}")


def get_engine(name: str) -> Engine:
    """Instantiate an engine by name (imports it on first use)."""
    import importlib

    try:
        target = ENGINES[name]
    except KeyError:
        raise _unknown_engine(name) from None
    module, _, cls = target.partition(":")
    engine: Engine = getattr(importlib.import_module(module), cls)()
    return engine


_KERNEL_OBJECT = re.compile(r"\.kernel\.|\bComm\(|comm_manager|\bipykernel\b")


def fork_unsupported(spec: Any, imports: list[str], sources: list[str] | None = None) -> str | None:
    """Why the fork engine cannot run this notebook (None when it can)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return f"the fork engine needs Linux (this is {sys.platform})"
    language = str(getattr(spec, "language", "") or "").lower()
    if not language.startswith("python"):
        return f"the notebook's kernel runs {language or 'another language'}, not Python"
    argv = list(getattr(spec, "argv", []) or [])
    exe = argv[0] if argv else ""
    if exe in ("python", "python3", "{python}", sys.executable) or _same_file(exe, sys.executable):
        pass
    else:
        return f"its kernel runs another Python ({exe}) than Kiln's ({sys.executable})"
    if "ipykernel" not in " ".join(argv):
        return "its kernel is not ipykernel"
    if any(m.split(".")[0] == "ipywidgets" for m in imports):
        return "it uses ipywidgets, which need a kernel's comm channel"
    if any(_KERNEL_OBJECT.search(src) for src in sources or []):
        return "it talks to the kernel object itself (get_ipython().kernel, comms)"
    return None


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def choose_engine(
    requested: str,
    spec: Any,
    imports: list[str],
    *,
    sources: list[str] | None = None,
    memory_limit: int | None = None,
) -> tuple[str, str | None]:
    """The engine for a run, and a one-line notice when ``auto`` falls back to the kernel."""
    from kiln.options import OptionError

    if requested not in ENGINES and requested != "auto":
        raise _unknown_engine(requested)
    if requested in ("kernel", "fake"):
        if memory_limit and requested == "kernel":
            raise OptionError("memory_limit", "a memory limit needs the fork engine (fork or auto)")
        return requested, None
    why = fork_unsupported(spec, imports, sources or [])
    if why is None:
        return "fork", None
    if requested == "fork" or memory_limit:
        option = "engine" if requested == "fork" else "memory_limit"
        raise OptionError(option, f"the fork engine cannot run this notebook: {why}")
    return "kernel", f"using the kernel engine: {why}"
