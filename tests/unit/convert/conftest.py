"""Fixtures for the convert tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest


@pytest.fixture
def write_nb(tmp_path: Path) -> Callable[..., Path]:
    def write(nb: Any, name: str = "nb.ipynb") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        return path

    return write
