"""Test helpers shared by every tier (import as `from kilntest import ...`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KILN = str(Path(sys.executable).with_name("kiln"))

CellSpec = str | tuple[str, Sequence[str]] | tuple[str, str, Sequence[str]]


def build_notebook(
    cells: Sequence[CellSpec], *, kernel: str = "python3", language: str = "python"
) -> Any:
    """Cells as source strings, (source, tags) or ("markdown", source, tags)."""
    out = []
    for spec in cells:
        if isinstance(spec, str):
            out.append(new_code_cell(spec))
        elif len(spec) == 2:
            out.append(new_code_cell(spec[0], metadata={"tags": list(spec[1])}))
        else:
            kind, source, tags = spec
            maker = new_markdown_cell if kind == "markdown" else new_code_cell
            out.append(maker(source, metadata={"tags": list(tags)}))
    return new_notebook(
        cells=out,
        metadata={"kernelspec": {"name": kernel, "display_name": kernel, "language": language}},
    )


def read_nb(path: Path | str) -> Any:
    return nbformat.read(str(path), as_version=4)


def stream_text(cell: Any, name: str = "stdout") -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == name
    )
