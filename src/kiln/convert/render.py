"""Text for people: a :class:`NotebookDiff` in (optional) colour, and a notebook as plain text.

:func:`render_text` is what ``kiln diff --textconv`` prints for git's ``diff.kiln.textconv``:
git diffs these renderings instead of JSON, so ``git diff`` shows changed lines, one cell after
another, with the cell type and tags as headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kiln.convert.diff import CellDiff, NotebookDiff, output_parts, source_text

__all__ = ["render_diff", "render_text"]

_RESET: Final = "\x1b[0m"
#: ANSI colour of each line kind (see :data:`kiln.convert.diff.DiffLine`)
_COLORS: Final = {
    "-": "\x1b[31m",
    "+": "\x1b[32m",
    "@": "\x1b[36m",
    "#": "\x1b[1m",
    "!": "\x1b[33m",
    "file": "\x1b[1m",
    "cell": "\x1b[1;35m",
}
_PREFIX: Final = {"-": "-", "+": "+", " ": " ", "@": "", "#": "", "!": "! "}


def render_diff(diff: NotebookDiff, *, color: bool = False) -> str:
    """The diff as text, with ANSI colours when ``color``; empty when nothing differs."""
    if not diff.changed:
        return ""

    def paint(kind: str, text: str) -> str:
        code = _COLORS.get(kind)
        return f"{code}{text}{_RESET}" if color and code else text

    out = [paint("file", f"--- {diff.a_name}"), paint("file", f"+++ {diff.b_name}")]
    for cell in diff.cells:
        out.append(paint("cell", _cell_heading(cell)))
        sections = (("source", cell.source), ("outputs", cell.outputs), ("metadata", cell.metadata))
        for title, lines in sections:
            if not lines:
                continue
            if cell.status == "modified":
                out.append(f"  {title}")
            out.extend(paint(kind, "    " + _PREFIX.get(kind, "") + text) for kind, text in lines)
    if diff.metadata:
        out.append(paint("cell", "## notebook"))
        out.extend(paint(kind, "    " + _PREFIX[kind] + text) for kind, text in diff.metadata)
    counts = diff.counts()
    shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    total = sum(counts.values())
    summary = f"{total} cell(s) differ: {shown}" if total else "cells are the same"
    if diff.metadata:
        summary += "; notebook metadata differs"
    out.append(summary)
    return "\n".join(out) + "\n"


def _cell_heading(cell: CellDiff) -> str:
    if cell.status == "added":
        return f"## cell {cell.b_index} added ({cell.cell_type})"
    if cell.status == "removed":
        return f"## cell {cell.a_index} removed ({cell.cell_type})"
    where = (
        f"cell {cell.b_index}"
        if cell.a_index == cell.b_index
        else f"cell {cell.a_index} -> {cell.b_index}"
    )
    return f"## {where} modified ({cell.cell_type})"


def render_text(nb: Mapping[str, Any], *, outputs: bool = False) -> str:
    """A notebook as text for reading and diffing: metadata, then each cell's source.

    What is shown is what ``kiln clean`` keeps: no execution counts or volatile metadata, and
    only the outputs of cells tagged ``keep-output`` -- so with Kiln's git filter, ``git diff``
    shows exactly what a commit will hold. ``outputs`` shows every output (images by size and
    digest).
    """
    import copy

    from kiln.convert.clean import clean_json
    from kiln.convert.diff import flatten_metadata

    shown = copy.deepcopy(dict(nb))
    clean_json(shown, keep_outputs=outputs)
    nb = shown
    lines = [f"# nbformat {nb.get('nbformat')}.{nb.get('nbformat_minor', 0)}"]
    for key, value in flatten_metadata(nb.get("metadata") or {}, "").items():
        lines.append(f"# {key}: {_json(value)}")
    for cell in nb.get("cells") or []:
        lines.append("")
        lines.append(_text_heading(cell))
        lines.extend(source_text(cell).splitlines())
        for part in output_parts(cell.get("outputs") or []):
            if part.binary:
                lines.append(f"#> {part.describe()}")
            else:
                lines.append(f"#> {part.heading}")
                lines.extend(f"#> {line}" for line in part.lines)
    return "\n".join(lines) + "\n"


def _text_heading(cell: Mapping[str, Any]) -> str:
    heading = f"# %% [{cell.get('cell_type', 'code')}]"
    metadata = cell.get("metadata") or {}
    tags = metadata.get("tags")
    if tags:
        heading += " tags: " + ", ".join(str(t) for t in tags)
    rest = {k: v for k, v in metadata.items() if k != "tags"}
    if rest:
        heading += " metadata: " + _json(rest)
    return heading


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)
