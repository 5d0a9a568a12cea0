"""Shared fixtures: notebook factories and an isolated KILN_HOME per test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest
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


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "kiln-home"
    monkeypatch.setenv("KILN_HOME", str(h))
    return h


@pytest.fixture
def make_nb(tmp_path: Path) -> Callable[..., Path]:
    def make(cells: Sequence[CellSpec], name: str = "nb.ipynb", **kw: Any) -> Path:
        path = tmp_path / name
        nbformat.write(build_notebook(cells, **kw), path)
        return path

    return make


@pytest.fixture
def kiln_cli(home: Path, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `kiln` command in a subprocess with this test's KILN_HOME."""

    def run(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KILN_HOME=str(home))
        env.update(kw.pop("env", {}))
        return subprocess.run(
            [KILN, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=kw.pop("cwd", tmp_path),
            **kw,
        )

    return run


def read_nb(path: Path | str) -> Any:
    return nbformat.read(str(path), as_version=4)


def stream_text(cell: Any, name: str = "stdout") -> str:
    return "".join(
        o.get("text", "")
        for o in cell.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == name
    )
