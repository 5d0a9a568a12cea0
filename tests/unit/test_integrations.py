"""What the orchestrator integrations share (no orchestrator needed): task ids, which failures
are retried, the message a failed task shows, the KFP plan's refusals; and that ``import
kiln``, ``kiln run`` and ``kiln build`` load no orchestrator even where one is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kiln.errors import CellExecutionError, CellFailure, ParameterError, RunCancelled, RunFailed
from kiln.integrations.common import failure_text, retryable, task_ids
from kiln.store.records import Run, RunState

from kilntest import build_notebook


def _run(state: str) -> Run:
    return Run(
        id="r1",
        notebook_path="nb.ipynb",
        notebook_sha256="0",
        state=RunState(state),
        output_path="/out/nb.ipynb",
        log_path="/home/runs/r1/run.log",
    )


def test_task_ids_are_what_airflow_accepts_and_unique() -> None:
    ids = task_ids(["clean[region=EU]", "clean[region=US,n=2]", "a b", "a_b", "x/y"])
    assert ids["clean[region=EU]"] == "clean.region-EU"
    assert ids["clean[region=US,n=2]"] == "clean.region-US.n-2"
    assert ids["a b"] == "a_b" and ids["a_b"] == "a_b_2"
    assert all(
        set(i) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
        for i in ids.values()
    )


@pytest.mark.parametrize(
    ("state", "expected"),
    [("failed", True), ("timed_out", True), ("crashed", True), ("cancelled", False)],
)
def test_only_a_run_that_failed_is_worth_a_retry(state: str, expected: bool) -> None:
    assert retryable(RunFailed("x", run=_run(state))) is expected


def test_a_refusal_or_a_cancel_is_never_retried() -> None:
    assert not retryable(ParameterError("parameter 'n' expects int"))
    assert not retryable(RunCancelled("cancelled", run=_run("cancelled")))
    assert not retryable(ValueError("not Kiln's"))


def test_the_failure_text_is_kilns_message_with_the_run() -> None:
    failure = CellFailure(2, 3, "ValueError", "boom", ["tb"], "raise ValueError('boom')")
    error = CellExecutionError(failure, notebook="nb.ipynb", run=_run("failed"))
    text = failure_text(error)
    assert text.startswith("nb.ipynb: cell 2 (In [3]) raised ValueError: boom")
    assert text.endswith(
        "Kiln run r1 failed: output notebook /out/nb.ipynb, log /home/runs/r1/run.log"
    )
    assert failure_text(ParameterError("parameter 'n' expects int")) == (
        "parameter 'n' expects int"
    )


def _project(root: Path, product_declared: bool) -> Path:
    root.mkdir()
    params = "product = None" if product_declared else "n = 1"
    nbformat.write(build_notebook([(params, ["parameters"]), "pass"]), root / "a.ipynb")
    nbformat.write(build_notebook([("upstream = None", ["parameters"]), "pass"]), root / "b.ipynb")
    (root / "kiln.yaml").write_text(
        "pipelines:\n  p:\n    tasks:\n"
        "      a: {notebook: a.ipynb, products: {out: out/a.txt}}\n"
        "      b: {notebook: b.ipynb, upstream: [a]}\n"
    )
    return root


def test_kfp_refuses_products_a_notebook_cannot_receive(tmp_path: Path) -> None:
    from kiln.errors import UsageError
    from kiln.integrations.kubeflow import plan
    from kiln.pipeline import load_pipeline
    from kiln.project import load_project

    root = _project(tmp_path / "bad", product_declared=False)
    pipeline = load_pipeline("p", project=load_project(root))
    with pytest.raises(UsageError, match=r"task a: its notebook a.ipynb declares no 'product'"):
        plan(pipeline)
    good = _project(tmp_path / "good", product_declared=True)
    plans = plan(load_pipeline("p", project=load_project(good)))
    assert plans["a"].outputs == {"out": "product__out"}
    assert plans["b"].inputs == {("a", "out"): "upstream__a__out"}


def test_kiln_and_kiln_run_load_no_orchestrator(tmp_path: Path) -> None:
    # stand-ins for the orchestrators, importable: a stray import would load them
    for name in ("airflow", "prefect", "kfp"):
        (tmp_path / "fake" / name).mkdir(parents=True)
        (tmp_path / "fake" / name / "__init__.py").write_text("")
    root = _project(tmp_path / "proj", product_declared=True)
    code = (
        "import sys\n"
        "import kiln\n"
        "from kiln.cli.main import run_main\n"
        "codes = [run_main(['run', 'a.ipynb', '--prepare-only', '-q']),\n"
        "         run_main(['build', 'p', '--dry-run'])]\n"
        "loaded = [m for m in ('airflow', 'prefect', 'kfp', 'kiln.integrations')"
        " if m in sys.modules]\n"
        "print(codes, loaded)"
    )
    env = {
        **os.environ,
        "KILN_HOME": str(tmp_path / "home"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "fake"), *sys.path]),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[0, 0] []"
