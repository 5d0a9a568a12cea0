"""``kiln.run_task``: one task of a pipeline run as ``kiln build`` runs it (what the Airflow and
Prefect integrations call for each task), with real runs: kiln.yaml's parameters with the
caller's overrides, ``upstream`` and ``product`` filled, the project root as working directory,
the caller's tags beside ``kiln.pipeline`` and ``kiln.task``; a task that did not write its
product fails; a grid's name or an unknown task is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

import kiln
from kiln.errors import RunFailed, UsageError

from kilntest import build_notebook

pytestmark = pytest.mark.kernel

WRITE = [
    ("day = 'none'\nproduct = None\nupstream = None", ["parameters"]),
    "import os, kiln\nfrom pathlib import Path\n"
    "before = Path(upstream['a']['out']).read_text() if upstream else ''\n"
    "Path(product['out']).parent.mkdir(parents=True, exist_ok=True)\n"
    "Path(product['out']).write_text(before + day)\n"
    "kiln.record('cwd', os.getcwd())\nkiln.record('text', before + day)",
]
FORGET = [("product = None", ["parameters"]), "x = 1"]

KILN_YAML = """\
pipelines:
  p:
    tasks:
      a: {notebook: write.ipynb, parameters: {day: mon}, products: {out: out/a.txt}}
      b: {notebook: write.ipynb, upstream: [a], products: {out: out/b.txt}}
      lazy: {notebook: forget.ipynb, products: {out: out/lazy.txt}}
      g: {notebook: write.ipynb, grid: {day: [x, y]}, products: {out: "out/g-{{params.day}}.txt"}}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    nbformat.write(build_notebook(WRITE), root / "write.ipynb")
    nbformat.write(build_notebook(FORGET), root / "forget.ipynb")
    (root / "kiln.yaml").write_text(KILN_YAML)
    return root


def test_a_task_runs_as_kiln_build_runs_it(project: Path) -> None:
    first = kiln.run_task("a", project=project, parameters={"day": "tue"}, tags={"who": "me"})
    assert first.state.value == "succeeded"
    assert (project / "out" / "a.txt").read_text() == "tue"
    assert first.records["cwd"] == str(project)
    assert first.tags == {"who": "me", "kiln.pipeline": "p", "kiln.task": "a"}
    # b reads a's product through upstream, as in kiln build; no build is recorded
    second = kiln.run_task("b", pipeline="p", project=project / "kiln.yaml")
    assert second.records["text"] == "tuenone"
    assert second.build_id is None
    assert [run.id for run in kiln.list_runs(home=project / ".kiln")] == [second.id, first.id]


def test_a_grid_member_runs_by_its_full_name(project: Path) -> None:
    run = kiln.run_task("g[day=y]", project=project)
    assert run.records["text"] == "y"
    assert run.tags["kiln.task"] == "g[day=y]"


def test_a_task_that_does_not_write_its_product_fails(project: Path) -> None:
    with pytest.raises(RunFailed, match=r"task lazy: the run succeeded but did not write out"):
        kiln.run_task("lazy", project=project)
    run = kiln.run_task("lazy", project=project, check=False)
    assert run.state.value == "succeeded"


def test_a_grid_name_or_an_unknown_task_is_refused(project: Path) -> None:
    with pytest.raises(UsageError, match=r"'g' is a grid task of pipeline p: run one member"):
        kiln.run_task("g", project=project)
    with pytest.raises(UsageError, match=r"no task 'bb'; did you mean 'b'"):
        kiln.run_task("bb", project=project)
    assert not (project / ".kiln").exists()
