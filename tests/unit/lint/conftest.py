"""The lint corpus (tests/data/lint/make_corpus.py), built once per test session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lintcorpus import make_corpus


@pytest.fixture(scope="session")
def lint_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("lint-corpus")
    return folder, make_corpus().build(folder)
