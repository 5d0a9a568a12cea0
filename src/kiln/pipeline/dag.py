"""The picture of a pipeline: its tasks, their dependencies, each task's last state (colour)
and its last run's duration, as Graphviz (SVG, PNG) or Mermaid text.

Graphviz drawing needs the ``graphviz`` Python package and the ``dot`` program (Debian's
``graphviz`` package); without ``dot`` the picture falls back to Mermaid text, which GitHub,
GitLab and many editors draw. The web UI uses the same description (:func:`task_marks`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import UsageError

if TYPE_CHECKING:
    from kiln.pipeline.model import Pipeline
    from kiln.store.builds import BuildStore

FORMATS = ("svg", "png", "mermaid")

#: state -> (fill, border): green done, red failed, orange stopped, blue running, grey unknown
COLOURS = {
    "succeeded": ("#c8e6c9", "#2e7d32"),
    "up_to_date": ("#e8f5e9", "#2e7d32"),
    "failed": ("#ffcdd2", "#c62828"),
    "crashed": ("#ffcdd2", "#c62828"),
    "blocked": ("#ffe0b2", "#ef6c00"),
    "cancelled": ("#ffe0b2", "#ef6c00"),
    "running": ("#bbdefb", "#1565c0"),
    "pending": ("#eeeeee", "#757575"),
    "never built": ("#ffffff", "#9e9e9e"),
}


@dataclass(frozen=True)
class TaskMark:
    """What the picture shows of one task: its last state and its last run's duration."""

    state: str
    duration: float | None

    @property
    def label(self) -> str:
        state = self.state.replace("_", " ")
        if self.duration is None:
            return state
        return f"{state} · {self.duration:.2f}s"


def task_marks(pipeline: Pipeline, builds: BuildStore | None) -> dict[str, TaskMark]:
    """Each task's state in the newest build that selected it, and the duration of its last
    run (``never built`` for a task no build has touched)."""
    marks: dict[str, TaskMark] = {}
    if builds is None:
        return {name: TaskMark("never built", None) for name in pipeline.tasks}
    states = builds.task_states(pipeline.key, pipeline.name)
    latest: dict[str, str] = {}
    run_ids: dict[str, str] = {}
    for build in builds.list_builds(pipeline.key, pipeline.name, limit=50):
        for name, row in build.tasks.items():
            latest.setdefault(name, row.state)
            if row.run_id and name not in run_ids:
                run_ids[name] = row.run_id
    for name, state in states.items():
        if name not in run_ids and state.run_id:
            run_ids[name] = state.run_id
    durations = builds.run_durations(run_ids.values())
    for name in pipeline.tasks:
        duration = durations.get(run_ids.get(name, ""))
        marks[name] = TaskMark(latest.get(name, "never built"), duration)
    return marks


def dot_source(pipeline: Pipeline, marks: dict[str, TaskMark]) -> str:
    """The pipeline in Graphviz's language (tasks left to right, upstream first)."""
    lines = [
        f"digraph {json.dumps(pipeline.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [color="#616161"];',
    ]
    for name, task in pipeline.tasks.items():
        mark = marks.get(name, TaskMark("never built", None))
        fill, border = COLOURS.get(mark.state, COLOURS["never built"])
        # a real newline: JSON writes it as \n, which is also DOT's line break
        label = f"{name}\n{task.notebook.name}\n{mark.label}"
        lines.append(
            f"  {json.dumps(name)} [label={json.dumps(label, ensure_ascii=False)}, "
            f'fillcolor="{fill}", color="{border}"];'
        )
    for name, task in pipeline.tasks.items():
        for up in task.upstream_tasks:
            lines.append(f"  {json.dumps(up)} -> {json.dumps(name)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def mermaid_source(pipeline: Pipeline, marks: dict[str, TaskMark]) -> str:
    """The pipeline as a Mermaid flowchart."""
    ids = {name: f"t{i}" for i, name in enumerate(pipeline.tasks)}
    lines = ["flowchart LR"]
    for name, task in pipeline.tasks.items():
        mark = marks.get(name, TaskMark("never built", None))
        text = f"{name}<br/>{task.notebook.name}<br/>{mark.label}".replace('"', "#quot;")
        lines.append(f'  {ids[name]}["{text}"]')
    for name, task in pipeline.tasks.items():
        for up in task.upstream_tasks:
            lines.append(f"  {ids[up]} --> {ids[name]}")
    used = {marks.get(n, TaskMark("never built", None)).state for n in pipeline.tasks}
    for state in sorted(used):
        fill, border = COLOURS.get(state, COLOURS["never built"])
        lines.append(f"  classDef {_css(state)} fill:{fill},stroke:{border}")
    for name in pipeline.tasks:
        state = marks.get(name, TaskMark("never built", None)).state
        lines.append(f"  class {ids[name]} {_css(state)}")
    return "\n".join(lines) + "\n"


def _css(state: str) -> str:
    return state.replace(" ", "_")


def dot_available() -> bool:
    return shutil.which("dot") is not None


@dataclass(frozen=True)
class Drawing:
    """A drawn picture: where it is, in which format, and why it is not the one asked for."""

    path: Path | None
    format: str
    text: str | None = None
    notice: str | None = None


def draw(
    pipeline: Pipeline,
    marks: dict[str, TaskMark],
    *,
    fmt: str = "svg",
    output: Path | None,
) -> Drawing:
    """Draw the pipeline into ``output`` (Mermaid may go to ``text`` when ``output`` is
    ``None``); SVG and PNG fall back to Mermaid when ``dot`` is missing."""
    if fmt not in FORMATS:
        raise UsageError(f"format: expected one of {', '.join(FORMATS)}; got {fmt!r}")
    notice = None
    if fmt != "mermaid" and not dot_available():
        notice = (
            f"Graphviz's dot program is not installed, so no {fmt.upper()}: wrote Mermaid text "
            "instead (install it with: apt-get install graphviz)"
        )
        fmt = "mermaid"
        if output is not None:
            output = output.with_suffix(".mmd")
    if fmt == "mermaid":
        text = mermaid_source(pipeline, marks)
        if output is None:
            return Drawing(None, fmt, text, notice)
        _write(output, text.encode("utf-8"))
        return Drawing(output, fmt, None, notice)
    try:
        import graphviz
    except ImportError:
        raise UsageError(
            "drawing with Graphviz needs the graphviz package: pip install graphviz "
            "(or use --format mermaid)"
        ) from None
    source = graphviz.Source(dot_source(pipeline, marks))
    try:
        data: bytes = source.pipe(format=fmt)
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError) as exc:
        raise UsageError(f"Graphviz could not draw the pipeline: {exc}") from None
    target = output if output is not None else Path(f"{pipeline.name}.{fmt}")
    _write(target, data)
    return Drawing(target, fmt, None, notice)


def _write(path: Path, data: bytes) -> None:
    from kiln.notebook.io import atomic_write

    try:
        atomic_write(path, (data,))
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
