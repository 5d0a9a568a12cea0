from __future__ import annotations

from collections.abc import Callable

import nbformat
import pytest
from nbformat import NotebookNode

NotebookFactory = Callable[..., NotebookNode]


def make_notebook(
    source: str | None,
    *,
    language: str | None = None,
    before: int = 1,
    after: int = 1,
) -> NotebookNode:
    """A notebook with ``before`` plain cells, a ``parameters`` cell (unless source is None),
    then ``after`` plain cells."""
    nb = nbformat.v4.new_notebook()
    if language is not None:
        nb.metadata["kernelspec"] = {"name": language, "language": language, "display_name": "k"}
    cells = [nbformat.v4.new_markdown_cell(f"# before {i}") for i in range(before)]
    if source is not None:
        cells.append(nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]}))
    cells += [nbformat.v4.new_code_cell(f"print({i})") for i in range(after)]
    nb.cells = cells
    return nb


@pytest.fixture
def notebook() -> NotebookFactory:
    return make_notebook
