"""verify_notebook on the fake engine (no kernel): the fresh run goes through the runner and is
recorded, and its outputs are compared with the saved ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

import kiln
from kiln.testing import NotebookSession, verify_notebook


def saved(tmp_path: Path, *cells: tuple[str, int | None, str | None]) -> Path:
    """A notebook as saved by a person: (source, execution count, printed text)."""
    nb_cells = []
    for source, count, printed in cells:
        outputs = [new_output("stream", name="stdout", text=printed)] if printed else []
        nb_cells.append(new_code_cell(source, execution_count=count, outputs=outputs))
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=nb_cells), path)
    return path


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # reports name the notebook as given: nb.ipynb


@pytest.fixture
def session() -> Any:
    with NotebookSession() as shared:
        yield shared


def verify(path: Path, session: NotebookSession, **kw: Any) -> Any:
    home = path.parent / "home"
    return verify_notebook(path.name, engine="fake", home=home, session=session, **kw)


def test_reproducible_notebook(tmp_path: Path, session: NotebookSession) -> None:
    nb = saved(tmp_path, ("total = 2", 1, None), ("print(total * 21)", 2, "42\n"))
    result = verify(nb, session)
    assert (result.status, result.exit_code, result.ok) == ("reproducible", 0, True)
    assert result.report().startswith("nb.ipynb: reproducible (2 code cells compared; run ")
    runs = kiln.list_runs(home=tmp_path / "home")
    assert [r.id for r in runs] == [result.run.id]  # recorded like any run
    assert runs[0].notebook_path == str(nb.resolve())


def test_hidden_state_diverges_at_the_right_cell(tmp_path: Path, session: NotebookSession) -> None:
    # saved after a since-deleted cell set total = 2: the output rests on hidden state
    nb = saved(tmp_path, ("total = 1", 1, None), ("print(total)", 3, "2\n"), ("print(0)", 4, "0\n"))
    result = verify(nb, session)
    assert (result.status, result.exit_code) == ("diverged", 1)
    assert result.comparison.divergence is not None
    assert result.comparison.divergence.cell_index == 1
    report = result.report()
    assert report.splitlines()[0] == (
        "nb.ipynb: DIVERGED at cell 1 (In [3]): the fresh outputs differ from the saved ones"
    )
    assert "   1 | print(total)" in report and "\n-2\n+1" in report


def test_fresh_run_failing_names_the_cell(tmp_path: Path, session: NotebookSession) -> None:
    # saved from an out-of-order execution: cell 1 ran first
    nb = saved(tmp_path, ("print(helper)", 2, "5\n"), ("helper = 5", 1, None))
    warnings: list[str] = []
    result = verify(nb, session, on_warning=warnings.append)
    assert (result.status, result.exit_code) == ("failed", 1)
    report = result.report()
    assert report.startswith(
        "nb.ipynb: FAILED: cell 0 (In [1]) raised NameError: name 'helper' is not defined\n"
        "---- cell 0 source ----\n"
        "   1 | print(helper)\n"
    )
    assert "saved -> fresh ----\n--- saved\n+++ fresh" in report  # what the cell printed before
    assert "\n-5\n" in report
    assert any("not run top to bottom" in w for w in warnings)
    assert result.to_json()["failure"]["ename"] == "NameError"


def test_same_error_saved_suggests_the_tag(tmp_path: Path, session: NotebookSession) -> None:
    nb_cells = [
        new_code_cell(
            "1/0",
            execution_count=1,
            outputs=[new_output("error", ename="ZeroDivisionError", evalue="division by zero")],
        )
    ]
    path = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=nb_cells), path)
    result = verify(path, session)
    assert result.status == "failed"
    assert result.report().startswith(
        "nb.ipynb: FAILED: cell 0 (In [1]) raised ZeroDivisionError: division by zero"
    )
    assert "tag the cell raises-exception if the error is expected" in result.report()


def test_ignore_regexes_and_kiln_yaml(tmp_path: Path, session: NotebookSession) -> None:
    nb = saved(tmp_path, ("import random; print('draw', random.random())", 1, "draw 0.123\n"))
    assert verify(nb, session).status == "diverged"
    assert verify(nb, session, ignore=[r"draw \S+"]).ok
    (tmp_path / "kiln.yaml").write_text("verify:\n  ignore: ['0\\.\\d+']\n", encoding="utf-8")
    assert verify(nb, session).ok


def test_json_shape(tmp_path: Path, session: NotebookSession) -> None:
    nb = saved(tmp_path, ("print(1)", 1, "2\n"))
    data = verify(nb, session).to_json()
    assert data["status"] == "diverged" and data["run_state"] == "succeeded"
    assert data["comparison"]["divergence"]["cell_index"] == 0
    assert set(data) >= {"notebook", "run_id", "output_path", "log_path", "warnings"}


def test_timeout_is_reported_without_a_cell_error(tmp_path: Path, session: NotebookSession) -> None:
    nb = saved(tmp_path, ("print(1)", 1, "1\n"), ("%%fake-hang", None, None))
    result = verify(nb, session)
    assert result.status == "failed" and result.run.state == "timed_out"
    first, second = result.report().splitlines()[:2]
    assert first == "nb.ipynb: FAILED: the run timed out: cell 1 timed out"
    assert second.startswith("Run ")  # no misleading "the saved notebook shows the same error"


def test_nbval_skip_cells_do_not_run(tmp_path: Path, session: NotebookSession) -> None:
    nb = saved(
        tmp_path, ("# NBVAL_SKIP\nraise ValueError('ran')", 1, "kept\n"), ("print(2)", 2, "2\n")
    )
    result = verify(nb, session)
    assert result.ok, result.report()
    assert result.comparison.skipped == [(0, "not compared (# NBVAL_SKIP)")]
    original = nbformat.read(nb, as_version=4)
    assert original.cells[0].metadata.get("tags", []) == []  # the file itself is untouched
