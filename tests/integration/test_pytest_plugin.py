"""The pytest plugin on a sample project, each time in a pytest subprocess (pytester): notebook
items with readable failures, parameter sets from kiln.yaml and notebook metadata, the
regression mode, lint items, the kiln_run fixture, and ``-n 2``."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from corpus_util import corpus_path
from nbformat.v4 import new_code_cell, new_notebook, new_output

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.kernel

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
BASE = ("-p", "no:cacheprovider")


def write(path: Path, cells: list[Any], **metadata: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC, **metadata})
    nbformat.write(nb, path)


def params(source: str) -> Any:
    return new_code_cell(source, metadata={"tags": ["parameters"]})


FIXTURE_TESTS = """
import os
import pytest
import kiln
from kiln.errors import CellExecutionError


def test_records(kiln_run, tmp_path):
    run = kiln_run("notebooks/report.ipynb", region="US", n=4)
    assert run.records["total"] == 8
    assert run.run_dir.startswith(str(tmp_path))  # history under the test's tmp_path
    assert [r.id for r in kiln.list_runs(home=tmp_path / "kiln-home")] == [run.id]


def test_failures_raise_unless_check_false(kiln_run):
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        kiln_run("notebooks/bad.ipynb")
    assert kiln_run("notebooks/bad.ipynb", check=False).state == "failed"
"""


@pytest.fixture
def project(pytester: pytest.Pytester) -> Path:
    root = pytester.path
    write(root / "notebooks" / "ok.ipynb", [new_code_cell("x = 21\nprint(x * 2)")])
    write(
        root / "notebooks" / "bad.ipynb",
        [new_code_cell("a = 1"), new_code_cell("total = 10\nratio = total / (a - 1)  # boom")],
    )
    broken = [new_code_cell("raise RuntimeError('never collected')")]
    write(root / "notebooks" / ".ipynb_checkpoints" / "ok-checkpoint.ipynb", broken)
    write(root / ".kiln" / "runs" / "x" / "output.ipynb", broken)
    write(
        root / "notebooks" / "report.ipynb",
        [
            params("region = 'EU'\nn = 1"),
            new_code_cell(
                "import kiln\nassert region in ('EU', 'US')\nkiln.record('total', 2 * n)"
            ),
        ],
    )
    (root / "kiln.yaml").write_text(
        "tests:\n  notebooks/report.ipynb:\n    - {region: EU}\n    - {region: US, n: 3}\n",
        encoding="utf-8",
    )
    write(
        root / "notebooks" / "meta.ipynb",
        [params("region = 'EU'"), new_code_cell("assert region != 'MOON', 'no sales there'")],
        kiln={"tests": {"eu": {"region": "EU"}, "moon": {"region": "MOON"}}},
    )
    (root / "test_fixture.py").write_text(FIXTURE_TESTS, encoding="utf-8")
    return root


EXPECTED = {
    "notebooks/bad.ipynb::run": "FAILED",
    "notebooks/meta.ipynb::eu": "PASSED",
    "notebooks/meta.ipynb::moon": "FAILED",
    "notebooks/ok.ipynb::run": "PASSED",
    "notebooks/report.ipynb::region=EU": "PASSED",
    "notebooks/report.ipynb::region=US,n=3": "PASSED",
    "test_fixture.py::test_records": "PASSED",
    "test_fixture.py::test_failures_raise_unless_check_false": "PASSED",
}


def outcomes(stdout: str) -> dict[str, str]:
    """node id -> PASSED/FAILED/SKIPPED from ``-rA`` summary lines."""
    found = {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED", "ERROR") and rest:
            found[rest.split(" - ")[0].strip()] = word
    return found


def test_notebooks_as_tests_with_readable_failures(
    project: Path, pytester: pytest.Pytester
) -> None:
    result = pytester.runpytest_subprocess("--kiln", "-rA", *BASE)
    out = result.stdout.str()
    assert outcomes(out) == EXPECTED, out
    assert result.ret == 1
    assert "never collected" not in out  # .ipynb_checkpoints and .kiln are not collected
    report = out[out.index("_ bad.ipynb[run] _") :]
    assert "bad.ipynb: cell 1 (In [2]) raised ZeroDivisionError: division by zero" in report
    assert "---- cell 1 source ----\n   1 | total = 10\n   2 | ratio = total / (a - 1)" in report
    assert "----> 2 ratio = total / (a - 1)  # boom" in report  # the traceback
    assert "\x1b[" not in out
    moon = out[out.index("_ meta.ipynb[moon] _") :]
    assert "meta.ipynb with {'region': 'MOON'}: cell 2 (In [3]) raised AssertionError" in moon
    assert not (project / ".kiln" / "kiln.db").exists()  # no history in the project


def test_xdist_two_workers(project: Path, pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--kiln", "-n", "2", "-rA", *BASE)
    out = result.stdout.str()
    assert outcomes(out) == EXPECTED, out
    assert "gw0" in out and "gw1" in out


def test_collected_ids_lint_items_and_project_file_errors(
    project: Path, pytester: pytest.Pytester
) -> None:
    result = pytester.runpytest_subprocess(
        "--kiln-lint", "--kiln", "--collect-only", "-q", "notebooks", *BASE
    )
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids == [
        "notebooks/bad.ipynb::run",
        "notebooks/bad.ipynb::lint",
        "notebooks/meta.ipynb::eu",
        "notebooks/meta.ipynb::moon",
        "notebooks/meta.ipynb::lint",
        "notebooks/ok.ipynb::run",
        "notebooks/ok.ipynb::lint",
        "notebooks/report.ipynb::region=EU",
        "notebooks/report.ipynb::region=US,n=3",
        "notebooks/report.ipynb::lint",
    ]
    write(project / "notebooks" / "undefined.ipynb", [new_code_cell("print(profit)")])
    result = pytester.runpytest_subprocess("--kiln-lint", "-rA", "notebooks", *BASE)
    assert outcomes(result.stdout.str()) == {
        "notebooks/bad.ipynb::lint": "PASSED",
        "notebooks/meta.ipynb::lint": "PASSED",
        "notebooks/ok.ipynb::lint": "PASSED",
        "notebooks/report.ipynb::lint": "PASSED",
        "notebooks/undefined.ipynb::lint": "FAILED",
    }
    result.stdout.fnmatch_lines(["notebooks/undefined.ipynb:0:1:7: KL104 error: *profit*"])

    (project / "kiln.yaml").write_text("tests: [oops]\n", encoding="utf-8")
    result = pytester.runpytest_subprocess("--kiln", "notebooks/ok.ipynb", *BASE)
    result.stdout.fnmatch_lines(["*Error: kiln.yaml:1:1: tests: expected a mapping; got a list*"])
    assert "Traceback" not in result.stdout.str()


def saved_notebook(first_output: str) -> list[Any]:
    def out(text: str) -> list[Any]:
        return [new_output("stream", name="stdout", text=text)]

    error = new_output("error", ename="ZeroDivisionError", evalue="division by zero")
    return [
        new_code_cell("print(6 * 7)", execution_count=1, outputs=out(first_output)),
        new_code_cell("import datetime\nprint(datetime.datetime.now())", execution_count=2,
                      outputs=out("2020-01-01 10:00:00.123456\n")),
        new_code_cell("# NBVAL_IGNORE_OUTPUT\nimport random\nprint(random.random())",
                      execution_count=3, outputs=out("0.25\n")),
        new_code_cell("# NBVAL_RAISES_EXCEPTION\n1 / 0", execution_count=4, outputs=[error]),
        new_code_cell("# NBVAL_SKIP\nraise SystemError('a skipped cell ran')", execution_count=5),
        new_code_cell("print('after')", execution_count=6, outputs=out("after\n")),
    ]  # fmt: skip


def test_compare_mode_catches_a_changed_output(pytester: pytest.Pytester) -> None:
    write(pytester.path / "same.ipynb", saved_notebook("42\n"))
    write(pytester.path / "changed.ipynb", saved_notebook("41\n"))
    result = pytester.runpytest_subprocess("--kiln-compare", "-rA", *BASE)
    out = result.stdout.str()
    assert outcomes(out) == {"changed.ipynb::compare": "FAILED", "same.ipynb::compare": "PASSED"}
    report = out[out.index("_ changed.ipynb[compare] _") :]
    assert "changed.ipynb: DIVERGED at cell 0 (In [1]): the fresh outputs differ" in report
    assert "-41\n+42" in report.replace("\n ", "\n")


NBVAL = Path("nbval/nbval-0.11.0/tests/ipynb-test-samples")


@pytest.mark.corpus
def test_nbval_samples_with_kiln_compare(pytester: pytest.Pytester) -> None:
    samples = corpus_path(NBVAL)
    copied = []
    for path in sorted(samples.glob("*.ipynb")):
        if "latex" in path.name and importlib.util.find_spec("sympy") is None:
            continue  # test_verify's per-sample tests report these as skipped
        shutil.copy2(path, pytester.path / path.name)
        copied.append(path.stem)
    result = pytester.runpytest_subprocess("--kiln-compare", "-rA", *BASE)
    found = outcomes(result.stdout.str())
    expected = {
        f"{stem}.ipynb::compare": "FAILED" if "-fail-" in stem else "PASSED" for stem in copied
    }
    assert found == expected, result.stdout.str()
