"""How a failed run is told in text: which cell, its source, the error and the traceback.

Shared by ``kiln run``, ``kiln verify`` and the pytest plugin, so a failure reads the same
everywhere. Tracebacks are shown without colour codes, cut to their last frames."""

from __future__ import annotations

from typing import Any

from kiln.store.records import Run
from kiln.textutil import strip_ansi

SOURCE_LINES = 20
TRACEBACK_LINES = 60


def cell_label(index: int | None, execution_count: Any = None) -> str:
    """``cell 3 (In [7])``, ``cell 3``, or ``the run`` when no cell is known."""
    if index is None:
        return "the run"
    label = f"cell {index}"
    if isinstance(execution_count, int):
        label += f" (In [{execution_count}])"
    return label


def source_excerpt(source: str, *, limit: int = SOURCE_LINES) -> str:
    """A cell's source with line numbers, cut after ``limit`` lines."""
    lines = source.rstrip().splitlines() or [""]
    shown = [f"{n:4d} | {line}" for n, line in enumerate(lines[:limit], 1)]
    if len(lines) > limit:
        shown.append(f"     | ... ({len(lines) - limit} more lines)")
    return "\n".join(shown)


def section(title: str, body: str) -> str:
    return f"---- {title} ----\n{body.rstrip()}"


def failure_summary(run: Run) -> str:
    """One line: what went wrong in a run that did not succeed."""
    error = run.error or {}
    where = cell_label(error.get("cell_index"), error.get("execution_count"))
    if error.get("ename") and "traceback" in error:
        return f"{where} raised {error['ename']}: {error.get('evalue', '')}"
    state = run.state.value.replace("_", " ")
    return f"the run {state}: {run.reason or error.get('evalue') or state}"


def failure_text(run: Run, *, source: bool = True, traceback_lines: int = TRACEBACK_LINES) -> str:
    """The failing cell, its source and the traceback's last lines (ANSI stripped)."""
    error = run.error or {}
    parts = [failure_summary(run)]
    text = error.get("source")
    index = error.get("cell_index")
    if source and isinstance(text, str) and text.strip():
        parts.append(section(f"{cell_label(index)} source", source_excerpt(text)))
    traceback = error.get("traceback")
    if isinstance(traceback, list) and traceback:
        body = strip_ansi("\n".join(str(t) for t in traceback)).rstrip()
        lines = body.splitlines()
        if len(lines) > traceback_lines:
            lines = [f"... ({len(lines) - traceback_lines} lines above)", *lines[-traceback_lines:]]
        parts.append(section("traceback", "\n".join(lines)))
    return "\n".join(parts)


def run_footer(run: Run) -> str:
    """Where to look next: the run id, its output notebook and log."""
    return f"Run {run.id}: output notebook {run.output_path or '-'}, log {run.log_path or '-'}"
