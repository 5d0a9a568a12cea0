"""Shared fixtures: notebook factories and an isolated KILN_HOME per test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilntest import KILN, CellSpec, build_notebook


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
