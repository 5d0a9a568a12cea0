"""Load tests/data/lint/make_corpus.py (not a package) for the lint tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

MAKE_CORPUS = Path(__file__).resolve().parents[2] / "data" / "lint" / "make_corpus.py"
_NAME = "kiln_lint_make_corpus"


def make_corpus() -> ModuleType:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    folder = str(MAKE_CORPUS.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # its sibling modules, corpus_kit and corpus_more
    spec = importlib.util.spec_from_file_location(_NAME, MAKE_CORPUS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module
