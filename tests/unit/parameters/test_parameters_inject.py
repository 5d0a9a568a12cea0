"""Injection: papermill's layout, one injected cell, the input notebook left alone."""

from __future__ import annotations

import copy
from collections.abc import Callable

import nbformat
import pytest
from nbformat import NotebookNode

from kiln.errors import NoTranslator, ParameterTypeError
from kiln.parameters import InjectResult, infer_schema, inject_parameters

NotebookFactory = Callable[..., NotebookNode]  # the `notebook` fixture (conftest.py)


def tags(nb: NotebookNode) -> list[list[str]]:
    return [list(cell.metadata.get("tags", [])) for cell in nb.cells]


def injected(nb: NotebookNode) -> list[int]:
    return [i for i, t in enumerate(tags(nb)) if "injected-parameters" in t]


def test_injected_cell_goes_right_after_the_parameters_cell(notebook: NotebookFactory) -> None:
    nb = notebook("msg = 'hi'", before=2, after=2)
    result = inject_parameters(nb, {"msg": "Hello"})
    assert isinstance(result, InjectResult)
    assert (result.cell_index, result.had_parameters_cell) == (3, True)
    cells = result.notebook.cells
    assert len(cells) == len(nb.cells) + 1
    cell = cells[3]
    assert cell.cell_type == "code"
    assert cell.source == '# Parameters\nmsg = "Hello"\n'
    assert cell.metadata == {"tags": ["injected-parameters"]}
    assert cell.outputs == [] and cell.execution_count is None
    assert cells[2].metadata["tags"] == ["parameters"]  # kept as it was
    assert [c.source for c in cells[4:]] == ["print(0)", "print(1)"]
    nbformat.validate(result.notebook)


def test_without_parameters_cell_values_go_first(notebook: NotebookFactory) -> None:
    nb = notebook(None, before=2)
    result = inject_parameters(nb, {"x": 1})
    assert (result.cell_index, result.had_parameters_cell) == (0, False)
    assert result.notebook.cells[0].source == "# Parameters\nx = 1\n"
    assert len(result.notebook.cells) == 4
    nbformat.validate(result.notebook)


def test_empty_notebook(notebook: NotebookFactory) -> None:
    nb = notebook(None, before=0, after=0)
    result = inject_parameters(nb, {})
    assert [c.source for c in result.notebook.cells] == ["# Parameters\n"]


def test_reinjecting_replaces_the_previous_injected_cell(notebook: NotebookFactory) -> None:
    nb = notebook("n = 1", before=1, after=2)
    first = inject_parameters(nb, {"n": 2}).notebook
    # A stray injected cell elsewhere (an edited output notebook) goes too.
    stray = nbformat.v4.new_code_cell("n = 99", metadata={"tags": ["injected-parameters", "x"]})
    first.cells.append(stray)
    second = inject_parameters(first, {"n": 3})
    assert injected(second.notebook) == [2] and second.cell_index == 2
    assert second.notebook.cells[2].source == "# Parameters\nn = 3\n"
    assert len(second.notebook.cells) == len(nb.cells) + 1
    nbformat.validate(second.notebook)


def test_injected_cell_before_the_parameters_cell_is_removed(notebook: NotebookFactory) -> None:
    nb = notebook("n = 1", before=0)
    nb.cells.insert(
        0, nbformat.v4.new_code_cell("n = 5", metadata={"tags": ["injected-parameters"]})
    )
    result = inject_parameters(nb, {"n": 2})
    assert result.cell_index == 1 and injected(result.notebook) == [1]


def test_input_notebook_is_not_changed(notebook: NotebookFactory) -> None:
    nb = notebook("n = 1")
    before = copy.deepcopy(nb)
    result = inject_parameters(nb, {"n": 2})
    assert nb == before and result.notebook is not nb
    result.notebook.cells[1].metadata["tags"].append("changed")
    assert nb.cells[1].metadata["tags"] == ["parameters"]


def test_cell_ids_are_present_and_unique(notebook: NotebookFactory) -> None:
    nb = notebook("n = 1", before=3, after=3)
    for _ in range(3):
        nb = inject_parameters(nb, {"n": 2}).notebook
    ids = [cell.id for cell in nb.cells]
    assert all(ids) and len(set(ids)) == len(ids)
    nbformat.validate(nb)


def test_old_minor_format_gets_no_cell_id(notebook: NotebookFactory) -> None:
    nb = notebook("n = 1")
    nb.nbformat_minor = 4
    for cell in nb.cells:
        del cell["id"]
    nbformat.validate(nb)
    result = inject_parameters(nb, {"n": 2})
    assert "id" not in result.notebook.cells[2]
    nbformat.validate(result.notebook)


def test_round_trip_through_json(notebook: NotebookFactory) -> None:
    nb = notebook("s = ''")
    result = inject_parameters(nb, {"s": "line\u2028sep \"quoted\" 'x'\n"})
    again = nbformat.reads(nbformat.writes(result.notebook), as_version=4)
    assert again.cells[2].source == result.notebook.cells[2].source
    namespace: dict[str, object] = {}
    exec(again.cells[2].source, namespace)
    assert namespace["s"] == "line\u2028sep \"quoted\" 'x'\n"


@pytest.mark.parametrize(
    ("language", "source"),
    [
        ("R", '# Parameters\nregion = "EU"\n'),
        ("bash", "# Parameters\nregion='EU'\n"),
        ("julia", '# Parameters\nregion = "EU"\n'),
        ("python", '# Parameters\nregion = "EU"\n'),
    ],
)
def test_language_from_notebook_schema_or_argument(
    notebook: NotebookFactory, language: str, source: str
) -> None:
    nb = notebook("region = 'x'", language=language)
    assert inject_parameters(nb, {"region": "EU"}).notebook.cells[2].source == source
    schema = infer_schema(nb)
    assert inject_parameters(nb, {"region": "EU"}, schema=schema).notebook.cells[2].source == source
    plain = notebook("region = 'x'")
    forced = inject_parameters(plain, {"region": "EU"}, language=language)
    assert forced.notebook.cells[2].source == source


def test_unknown_language_is_refused(notebook: NotebookFactory) -> None:
    with pytest.raises(NoTranslator, match="'scala'"):
        inject_parameters(notebook("x = 1", language="scala"), {"x": 1})


def test_values_that_are_not_data_are_refused(notebook: NotebookFactory) -> None:
    with pytest.raises(ParameterTypeError):
        inject_parameters(notebook("x = 1"), {"x": object()})
