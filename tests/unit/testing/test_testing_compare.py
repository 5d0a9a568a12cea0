"""compare_notebooks and the cell markers it honours (Kiln's tags and nbval's conventions)."""

from __future__ import annotations

from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from kiln.testing import compare_notebooks
from kiln.testing.markers import as_kiln_tags, cell_policy


def cell(source: str, printed: str | None, count: int | None = 1, tags: Any = ()) -> Any:
    outputs = [new_output("stream", name="stdout", text=printed)] if printed is not None else []
    return new_code_cell(
        source, execution_count=count, outputs=outputs, metadata={"tags": list(tags)}
    )


def notebook(*cells: Any) -> Any:
    return new_notebook(cells=list(cells))


def test_identical_outputs_are_ok() -> None:
    saved = notebook(cell("print(1)", "1\n", 1), new_markdown_cell("# hi"), cell("x", None, 2))
    comparison = compare_notebooks(saved, saved)
    assert comparison.ok and comparison.compared == 2 and comparison.warnings == []


def test_first_diverging_cell_is_reported_with_a_diff() -> None:
    saved = notebook(cell("a = 1", None, 1), cell("print(a)", "2\n", 2), cell("print(3)", "x", 3))
    fresh = notebook(cell("a = 1", None, 1), cell("print(a)", "1\n", 2), cell("print(3)", "3", 3))
    comparison = compare_notebooks(saved, fresh)
    divergence = comparison.divergence
    assert divergence is not None and not comparison.ok
    assert (divergence.cell_index, divergence.execution_count) == (1, 2)
    assert divergence.source == "print(a)"
    assert "-2" in divergence.diff.splitlines() and "+1" in divergence.diff.splitlines()
    assert divergence.diff.startswith("--- saved\n+++ fresh")


@pytest.mark.parametrize(
    "marked",
    [
        cell("print(2)", "1\n", tags=["kiln-verify-skip"]),
        cell("print(2)", "1\n", tags=["nbval-ignore-output"]),
        cell("# NBVAL_IGNORE_OUTPUT\nprint(2)", "1\n"),
        cell("#NBVAL_SKIP\nprint(2)", "1\n"),
        cell("print(2)", "1\n", tags=["skip-execution"]),
    ],
    ids=["kiln-verify-skip", "nbval-ignore-output", "NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP", "skip"],
)
def test_marked_cells_are_not_compared(marked: Any) -> None:
    fresh = notebook(cell(marked.source, "2\n", tags=marked.metadata["tags"]))
    comparison = compare_notebooks(notebook(marked), fresh)
    assert comparison.ok and comparison.compared == 0
    assert comparison.skipped[0][0] == 0 and "not compared" in comparison.skipped[0][1]


def test_cells_never_executed_in_the_saved_notebook_are_not_compared() -> None:
    # nbval's rule: nothing saved, nothing to reproduce
    saved = notebook(cell("print(1)", "1\n", 1), cell("print(1)", None, None))
    fresh = notebook(cell("print(1)", "1\n", 1), cell("print(1)", "1\n", 2))
    comparison = compare_notebooks(saved, fresh)
    assert comparison.ok and comparison.skipped == [(1, "never executed in the saved notebook")]
    # an executed cell whose output is missing is compared (nbval: stream-fail-missingoutput)
    saved.cells[1].execution_count = 2
    assert compare_notebooks(saved, fresh).divergence is not None


def test_cells_after_the_one_a_failed_run_reached_are_not_compared() -> None:
    saved = notebook(cell("print(1)", "1\n", 1), cell("print(2)", "2\n", 2))
    fresh = notebook(cell("print(1)", "1\n", 1), cell("print(2)", None, None))
    comparison = compare_notebooks(saved, fresh, reached=0)
    assert comparison.ok and comparison.compared == 1
    assert comparison.skipped[0][1].startswith("not reached")


def test_failure_marks_and_an_injected_cell_are_passed_over() -> None:
    saved = notebook(cell("n = 1", None, 1, tags=["parameters"]), cell("print(n)", "1\n", 2))
    fresh = notebook(
        new_markdown_cell("banner", metadata={"tags": ["kiln-error-banner"]}),
        cell("n = 1", None, 1, tags=["parameters"]),
        cell("n = 1", None, 2, tags=["injected-parameters"]),
        cell("print(n)", "1\n", 3),
    )
    comparison = compare_notebooks(saved, fresh)
    assert comparison.ok and comparison.compared == 2


def test_out_of_order_counts_are_a_warning() -> None:
    saved = notebook(cell("print(b)", "2\n", 5), cell("b = 2", None, 4))
    comparison = compare_notebooks(saved, saved)
    assert comparison.ok
    assert comparison.warnings == [
        "the saved notebook was not run top to bottom: cell 1 has In [4] after cell 0's In [5], "
        "so its outputs may rest on hidden state"
    ]


def test_a_notebook_without_outputs_warns_that_nothing_was_compared() -> None:
    clean = notebook(cell("print(1)", None, None))
    comparison = compare_notebooks(clean, clean)
    assert comparison.ok and comparison.compared == 0
    assert "no saved outputs to compare" in comparison.warnings[0]


def test_paths_are_accepted(tmp_path: Any) -> None:
    nbformat.write(notebook(cell("print(1)", "1\n")), tmp_path / "a.ipynb")
    nbformat.write(notebook(cell("print(1)", "one\n")), tmp_path / "b.ipynb")
    comparison = compare_notebooks(tmp_path / "a.ipynb", str(tmp_path / "b.ipynb"))
    assert comparison.divergence is not None and comparison.to_json()["ok"] is False


def test_cell_policy_reads_tags_and_whole_comment_lines() -> None:
    assert cell_policy(cell("# NBVAL_RAISES_EXCEPTION\n1/0", None)).raises
    assert cell_policy(cell("1/0", None, tags=["raises-exception"])).why == "tag raises-exception"
    assert cell_policy(cell("x = 1  # NBVAL_SKIP is mentioned here", None)).compared
    policy = cell_policy(cell("  ## NBVAL_SKIP  \nx", None))
    assert policy.skip and policy.why == "# NBVAL_SKIP"


def test_nbval_markers_become_kiln_tags() -> None:
    nb = notebook(
        cell("# NBVAL_RAISES_EXCEPTION\n1/0", None),
        cell("x", None, tags=["nbval-skip"]),
        cell("y", None),
    )
    assert as_kiln_tags(nb)
    assert [c.metadata["tags"] for c in nb.cells] == [
        ["raises-exception"],
        ["nbval-skip", "skip-execution"],
        [],
    ]
    assert not as_kiln_tags(nb)  # nothing more to add
