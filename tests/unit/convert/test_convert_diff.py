"""`kiln diff`: cell alignment, what is reported, colours, exit codes, the git textconv view."""

from __future__ import annotations

import copy

import pytest
from convert_nbs import PNG_B, executed_notebook
from nbformat.v4 import new_code_cell, new_markdown_cell

from kiln.cli.main import run_main
from kiln.convert.diff import align_cells, diff_notebooks
from kiln.convert.render import render_diff, render_text


def _diff(a, b, **kw):
    diff = diff_notebooks(a, b, a_name="a.ipynb", b_name="b.ipynb", **kw)
    return diff, render_diff(diff)


def test_identical_notebooks_exit_0_and_print_nothing(write_nb, capsys):
    a = write_nb(executed_notebook(), "a.ipynb")
    b = write_nb(executed_notebook(), "b.ipynb")  # new cell ids, same content
    assert run_main(["diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out == ""


def test_changed_source_lines_and_outputs_exit_1(write_nb, capsys):
    a = write_nb(executed_notebook(n=3), "a.ipynb")
    b = write_nb(executed_notebook(n=4), "b.ipynb")
    assert run_main(["diff", "--color", "never", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "## cell 1 modified (code)" in out
    assert "    -n = 3\n    +n = 4\n" in out
    assert "    [stdout]\n    -3\n    +4\n" in out
    assert "    [text/plain]\n    -6\n    +8\n" in out
    assert out.endswith("2 cell(s) differ: 2 modified\n")
    assert "\x1b[" not in out


def test_changed_image_is_reported_as_image_changed():
    diff, text = _diff(executed_notebook(), executed_notebook(png=PNG_B))
    assert "! image changed: image/png (48 B -> 68 B)" in text
    assert [c.b_index for c in diff.cells] == [3]


def test_inserted_cell_does_not_shift_the_rest():
    a = executed_notebook()
    b = copy.deepcopy(a)
    b.cells.insert(2, new_markdown_cell("## A new section"))
    diff, text = _diff(a, b)
    assert [(c.status, c.b_index) for c in diff.cells] == [("added", 2)]
    assert "## cell 2 added (markdown)\n    +## A new section" in text


def test_edited_cell_pairs_with_its_old_self_not_add_and_remove():
    a = [new_code_cell("import pandas as pd\ndf = load()"), new_code_cell("df.plot()")]
    b = [new_code_cell("import pandas as pd\ndf = load(cache=True)"), new_code_cell("df.plot()")]
    for cell in b:  # a notebook saved elsewhere: other ids
        cell.id = cell.id[::-1]
    assert align_cells(a, b) == [(0, 0), (1, 1)]


def test_rewritten_cell_with_same_id_is_modified():
    a = [new_code_cell("x = 1")]
    b = [new_code_cell("something else entirely")]
    b[0].id = a[0].id
    assert align_cells(a, b) == [(0, 0)]


def test_removed_and_added_cells():
    a = [new_code_cell("a = 1"), new_code_cell("unrelated()")]
    b = [new_code_cell("a = 1"), new_markdown_cell("# totally different prose")]
    diff, text = _diff({"cells": a, "metadata": {}}, {"cells": b, "metadata": {}})
    assert [c.status for c in diff.cells] == ["removed", "added"]
    assert "## cell 1 removed (code)\n    -unrelated()" in text


def test_metadata_changes_and_volatile_parts_ignored_by_default():
    a = executed_notebook()
    b = copy.deepcopy(a)
    b.cells[1].metadata.tags.append("slow")
    b.cells[1].metadata["execution"] = {"iopub.status.idle": "2025-01-01"}
    b.cells[2].execution_count = 9
    b.metadata.kernelspec.display_name = "Python 3 (ipykernel)"
    _, text = _diff(a, b)
    assert '    -tags: ["parameters"]\n    +tags: ["parameters", "slow"]' in text
    assert '## notebook\n    -metadata.kernelspec.display_name: "Python 3"' in text
    assert "execution" not in text
    _, everything = _diff(a, b, volatile=True)
    assert "+execution_count: 9" in everything and "execution.iopub.status.idle" in everything


def test_no_outputs_and_no_metadata_options(write_nb, capsys):
    a = write_nb(executed_notebook(n=3), "a.ipynb")
    changed = executed_notebook(n=3, png=PNG_B)
    changed.metadata.kernelspec.display_name = "Other"
    b = write_nb(changed, "b.ipynb")
    assert run_main(["diff", "--no-outputs", "--no-metadata", str(a), str(b)]) == 0
    assert run_main(["diff", "--no-outputs", str(a), str(b)]) == 1


@pytest.mark.parametrize(("choice", "ansi"), [("always", True), ("never", False), ("auto", False)])
def test_color_choice(write_nb, capsys, choice, ansi):
    a = write_nb(executed_notebook(n=3), "a.ipynb")
    b = write_nb(executed_notebook(n=4), "b.ipynb")
    run_main(["diff", "--color", choice, str(a), str(b)])  # auto: captured stdout is no tty
    out = capsys.readouterr().out
    assert ("\x1b[31m    -n = 3\x1b[0m" in out) is ansi


def test_bad_input_exits_2(write_nb, tmp_path, capsys):
    a = write_nb(executed_notebook(), "a.ipynb")
    assert run_main(["diff", str(a), str(tmp_path / "missing.ipynb")]) == 2
    assert "notebook not found" in capsys.readouterr().err
    assert run_main(["diff", str(a)]) == 2


def test_textconv_shows_what_a_commit_holds():
    text = render_text(executed_notebook())
    assert "# %% [code] tags: parameters\nregion = 'EU'\nn = 3\n" in text
    assert "#> [stdout]" not in text  # stripped by kiln clean, so not in the commit
    assert "#> [image/png] 48 B sha256:" in text  # the keep-output cell keeps its image
    assert "execution" not in text and "widgets" not in text
    assert "#> [stdout]\n#> 3" in render_text(executed_notebook(), outputs=True)


def test_textconv_passes_a_file_that_is_not_a_notebook_through(tmp_path, capsysbinary):
    path = tmp_path / "conflict.ipynb"
    path.write_bytes(b"<<<<<<< ours\n")
    assert run_main(["diff", "--textconv", str(path)]) == 0
    assert capsysbinary.readouterr().out == b"<<<<<<< ours\n"
