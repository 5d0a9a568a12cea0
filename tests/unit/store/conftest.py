"""Fixtures of the store tests: every test that takes ``store`` runs on both backends."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln.store import Run, RunStore

_counter = itertools.count()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "kiln-home"


@pytest.fixture
def store(home: Path, database_url: str | None) -> Iterator[RunStore]:
    """The store under test, once on SQLite and once on PostgreSQL (``database_url``)."""
    with RunStore(home) as opened:
        assert opened.backend == ("sqlite" if database_url is None else "postgresql")
        yield opened


@pytest.fixture
def make_run(store: RunStore) -> Callable[..., Run]:
    """Create and store a run; ids are sortable and unique within a test."""

    def make(**fields: Any) -> Run:
        number = next(_counter)
        fields.setdefault("id", f"20240101-000000-{number:06x}")
        fields.setdefault("notebook_path", "report.ipynb")
        fields.setdefault("notebook_sha256", "0" * 64)
        fields.setdefault("state", "queued")
        return store.create_run(Run(**fields))

    return make


def _run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KILN_HOME"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.fixture
def run_python() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run code in a fresh interpreter of this venv: ``run_python(code, *argv, timeout=60)``."""
    return _run_python
