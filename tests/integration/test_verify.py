"""``kiln verify`` with real engines: reproducible notebooks pass (volatile outputs included),
hidden state is caught at the right cell, --ignore-regex works, and nbval's sample notebooks
pass or fail as their names say."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from corpus_util import copy_in
from nbformat.v4 import new_code_cell, new_notebook, new_output

import kiln
from kiln.testing import NotebookSession, verify_notebook

pytestmark = pytest.mark.kernel

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}

VOLATILE_CELLS = [
    "import datetime, tempfile, time, uuid",
    "print(id(object()), object())",
    "datetime.datetime.now()",
    "print(datetime.date.today(), datetime.datetime.now(datetime.timezone.utc).isoformat())",
    "uuid.uuid4()",
    "print(uuid.uuid4().hex)",
    "print(tempfile.mkdtemp())",
    "%time sum(range(1000))",
    "print('\\x1b[31mred\\x1b[0m and', 6 * 7)",
    "import sys; print('to stderr', file=sys.stderr); print('to stdout')",
    "class Point: pass\nPoint()",
]


def write(path: Path, cells: list[Any]) -> Path:
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC}), path)
    return path


def printed(source: str, count: int, text: str) -> Any:
    return new_code_cell(
        source, execution_count=count, outputs=[new_output("stream", name="stdout", text=text)]
    )


def test_volatile_outputs_saved_by_a_kernel_are_reproducible(kiln_cli: Any, home: Path) -> None:
    source = write(home.parent / "source.ipynb", [new_code_cell(c) for c in VOLATILE_CELLS])
    # the saved outputs come from a Jupyter kernel; verify re-runs on the fork engine
    kiln.run(source, home.parent / "report.ipynb", engine="kernel", home=home)
    res = kiln_cli("verify", "report.ipynb")
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("report.ipynb: reproducible (11 code cells compared; run ")
    assert len(kiln.list_runs(home=home)) == 2  # the verification is a recorded run


def test_hidden_state_is_caught_at_the_right_cell(kiln_cli: Any, tmp_path: Path) -> None:
    # saved after radius was 3 in a cell since changed: the output rests on hidden state
    write(
        tmp_path / "changed.ipynb",
        [
            new_code_cell("import math", execution_count=1),
            new_code_cell("radius = 2", execution_count=4),
            printed("print(round(math.pi * radius ** 2, 2))", 5, "28.27\n"),
            printed("print('done')", 6, "done\n"),
        ],
    )
    # saved output used a variable defined in a cell that was deleted since
    write(
        tmp_path / "deleted.ipynb",
        [printed("total = 1\nprint(total * factor)", 3, "6\n"), printed("print(2)", 4, "2\n")],
    )
    res = kiln_cli("verify", "changed.ipynb")
    assert res.returncode == 1
    lines = res.stdout.splitlines()
    assert lines[0] == (
        "changed.ipynb: DIVERGED at cell 2 (In [5]): the fresh outputs differ from the saved ones"
    )
    assert "   1 | print(round(math.pi * radius ** 2, 2))" in lines
    assert lines[lines.index("@@ -1,2 +1,2 @@") + 1 :][:3] == [" [stdout]", "-28.27", "+12.57"]

    res = kiln_cli("verify", "--json", "changed.ipynb", "deleted.ipynb")
    assert res.returncode == 1
    data = json.loads(res.stdout)
    assert data["reproducible"] is False
    changed, deleted = data["notebooks"]
    assert changed["status"] == "diverged"
    assert changed["comparison"]["divergence"]["cell_index"] == 2
    assert deleted["status"] == "failed" and deleted["run_state"] == "failed"
    assert deleted["failure"]["cell_index"] == 0 and deleted["failure"]["ename"] == "NameError"

    res = kiln_cli("verify", "deleted.ipynb")
    assert res.stdout.startswith(
        "deleted.ipynb: FAILED: cell 0 (In [1]) raised NameError: name 'factor' is not defined\n"
        "---- cell 0 source ----\n"
        "   1 | total = 1\n"
        "   2 | print(total * factor)\n"
    )
    assert "\x1b[" not in res.stdout  # tracebacks without colour codes


def test_ignore_regex_from_the_command_line_and_kiln_yaml(kiln_cli: Any, tmp_path: Path) -> None:
    write(
        tmp_path / "draw.ipynb",
        [printed("import random\nprint('draw', random.randint(10**6, 10**7))", 1, "draw 42\n")],
    )
    assert kiln_cli("verify", "draw.ipynb").returncode == 1
    res = kiln_cli("verify", "draw.ipynb", "--ignore-regex", r"draw \d+")
    assert res.returncode == 0, res.stdout
    (tmp_path / "kiln.yaml").write_text("verify:\n  ignore: ['draw \\d+']\n", encoding="utf-8")
    assert kiln_cli("verify", "draw.ipynb").returncode == 0

    bad = kiln_cli("verify", "draw.ipynb", "--ignore-regex", "(")
    assert bad.returncode == 2 and "--ignore-regex: invalid regex '('" in bad.stderr
    missing = kiln_cli("verify", "nope.ipynb")
    assert missing.returncode == 2 and "notebook not found: nope.ipynb" in missing.stderr


# -- nbval's sample notebooks: -pass- files pass, -fail- files fail at the cell named -------------

NBVAL_SAMPLES = Path("nbval/nbval-0.11.0/tests/ipynb-test-samples")
#: sample -> (status, first failing cell); the cell is what the file name describes
NBVAL_EXPECTED = {
    "test-exceptions-fail-storedmismatch": ("diverged", 0),  # RuntimeError, saved NameError
    "test-latex-fail-randomoutput": ("diverged", 3),  # x**<random>
    "test-latex-pass-correctouput": ("reproducible", None),
    "test-latex-pass-failsbutignoreoutput": ("reproducible", None),  # NBVAL_IGNORE_OUTPUT
    "test-stream-fail-missingoutput": ("diverged", 1),  # executed, output missing
    "test-stream-pass-missing-unexecuted-output": ("reproducible", None),
}


@pytest.fixture(scope="module")
def session() -> Iterator[NotebookSession]:
    with NotebookSession() as shared:
        yield shared


@pytest.mark.corpus
@pytest.mark.parametrize("name", sorted(NBVAL_EXPECTED), ids=lambda n: n.removeprefix("test-"))
def test_nbval_samples(name: str, session: NotebookSession, tmp_path: Path) -> None:
    if "latex" in name:
        pytest.importorskip("sympy", reason="nbval's latex samples need sympy")
    notebook = copy_in(NBVAL_SAMPLES / f"{name}.ipynb", tmp_path)
    result = verify_notebook(notebook, home=tmp_path / "home", session=session)
    status, cell = NBVAL_EXPECTED[name]
    assert result.status == status, result.report()
    divergence = result.comparison.divergence
    assert (divergence.cell_index if divergence else None) == cell
