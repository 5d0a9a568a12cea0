"""What a run's outcome says, in the same words on every engine.

The texts end up in the run's ``reason``, the log and the output notebook's banner, so the
kernel engine and the fork engine build them here. Options are named by their API names
(``timeout``, ``cell_timeout``, ``memory_limit``): the CLI is the layer that knows flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def cell_raised(index: int, ename: str, evalue: str) -> str:
    return f"cell {index} raised {ename}: {evalue}"


def stopped_early(index: int) -> str:
    """``sys.exit(0)``: the notebook chose to stop, successfully."""
    return f"stopped early by SystemExit in cell {index}"


def cell_timed_out(index: int | None, seconds: float | None) -> str:
    limit = f" of {seconds:g}s" if seconds is not None else ""
    return f"cell {index} did not finish within the cell timeout{limit} (cell_timeout)"


def run_timed_out(during: str | None = None) -> str:
    """The whole-run deadline passed (``during``: what was happening, if not a cell)."""
    when = f" while {during}" if during else ""
    return f"the run did not finish within its time limit (timeout){when}"


def kernel_died(index: int | None, how: str | None = None) -> str:
    where = f" while running cell {index}" if index is not None else ""
    return f"the kernel died{where}" + (f": {how}" if how else "")


def kernel_died_starting(detail: str) -> str:
    return f"the kernel died while starting: {detail}"


def out_of_memory(limit: int, index: int | None) -> str:
    where = f" in cell {index}" if index is not None else ""
    return (
        f"the run was stopped for memory: it went over its memory limit of "
        f"{human_bytes(limit)}{where} (memory_limit)"
    )


#: how a process killed for going over its address-space cap usually ends
MEMORY_DEATHS = ("SIGKILL", "SIGSEGV", "SIGABRT", "SIGBUS")


def human_bytes(n: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:g}{unit}" if unit == "B" else f"{n:.3g}{unit}"
        n = n / 1024
    return str(n)


def error_output(outputs: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The last ``error`` output of a cell, if any (the error a kernel reported last).

    A cell whose outputs hold an error failed, whatever the kernel's reply said: an exception
    in a post-execute callback (matplotlib drawing a figure with bad mathtext) is shown as an
    error after the cell's code succeeded, and papermill and nbmake fail such a cell too.
    """
    found = None
    for output in outputs:
        if output.get("output_type") == "error":
            found = output
    return found
