"""Runs as experiments with real `kiln` processes and real kernels: what a run captures on both
engines, the environment stored once, reruns that say what changed (an input file, a package
upgraded in a separate venv), compare, metric series, artefacts, tags, and a prune that never
touches a running run and leaves the history consistent after a SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nbformat
import pytest
from tracking_util import (
    VenvUnavailable,
    build_tiny_package,
    install_tiny_package,
    package_venv,
)

from kilntest import KILN, build_notebook, git, wait_for

pytestmark = pytest.mark.kernel

Cli = Callable[..., subprocess.CompletedProcess[str]]

#: reads a declared input, records a number and a string, logs a series, keeps a file
EXPERIMENT = [
    ("n = 3\nlabel = 'a'", ["parameters"]),
    "import kiln\npath = kiln.input('data/x.csv')\nrows = open(path).read().splitlines()\n"
    "kiln.record('total', len(rows) * n)\nkiln.record('label', label)",
    "for epoch in range(n):\n    kiln.metric('loss', 1.0 / (epoch + 1), step=epoch)\n"
    "with open('model.txt', 'w') as f:\n    f.write(f'model of {n}')\n"
    "kiln.artifact('model.txt')",
]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with kiln.yaml (one declared input), a notebook, a data file; the
    Kiln home is the project's .kiln/ (not ignored by git: Kiln leaves it out itself)."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    monkeypatch.delenv("KILN_HOME", raising=False)
    root = tmp_path / "proj"
    (root / "data").mkdir(parents=True)
    (root / "data" / "x.csv").write_text("a,b\n1,2\n")
    (root / "data" / "extra.csv").write_text("c\n3\n")
    (root / "kiln.yaml").write_text("inputs:\n  - data/extra.csv\n  - data/absent.csv\n")
    nbformat.write(build_notebook(EXPERIMENT), root / "nb.ipynb")
    (root / ".gitignore").write_text("model.txt\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


def kiln(
    root: Path, *args: str, timeout: float = 180, **kw: Any
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KILN_HOME"}
    env.update(kw.pop("env", {}))
    return subprocess.run(
        [KILN, *args], capture_output=True, text=True, timeout=timeout, cwd=root, env=env, **kw
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def show(root: Path, key: str = "last") -> dict[str, Any]:
    data: dict[str, Any] = json.loads(ok(kiln(root, "runs", "show", key, "--json")).stdout)
    return data


def _db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(root / ".kiln" / "kiln.db")


# -- capture ------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["fork", "kernel"])
def test_a_run_captures_environment_git_inputs_metrics_and_artifacts(
    project: Path, engine: str
) -> None:
    commit = git(project, "rev-parse", "HEAD")
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "4", "--engine", engine, "--tag", "team=sales"))
    run = show(project)
    assert run["state"] == "succeeded" and run["engine"] == engine
    env = run["environment"]
    assert env["hash"] == run["environment_hash"]
    assert env["version"] == run["python_version"] == ".".join(map(str, sys.version_info[:3]))
    packages = dict(env["packages"])
    import nbclient

    assert packages["nbclient"] == nbclient.__version__ and "ipykernel" in packages
    assert env["os"] and env["machine"]
    # the project's .kiln/ and the ignored model.txt do not make the repository dirty
    assert run["git"]["commit"] == commit and run["git"]["dirty"] is False
    inputs = {Path(i["path"]).name: i for i in run["inputs"]}
    assert set(inputs) == {"x.csv", "extra.csv", "absent.csv"}
    assert inputs["absent.csv"]["sha256"] is None and inputs["absent.csv"]["error"]
    assert inputs["x.csv"]["source"] == "notebook" and inputs["extra.csv"]["source"] == "project"
    import hashlib

    expected = hashlib.sha256((project / "data" / "x.csv").read_bytes()).hexdigest()
    assert inputs["x.csv"]["sha256"] == expected
    assert [(m["name"], m["step"], m["value"]) for m in run["metrics"]] == [
        ("loss", 0, 1.0),
        ("loss", 1, 0.5),
        ("loss", 2, 1.0 / 3),
        ("loss", 3, 0.25),
    ]
    [artifact] = run["artifacts"]
    kept = Path(artifact["path"])
    assert kept.parent == Path(run["run_dir"]) / "artifacts"
    assert kept.read_text() == "model of 4" and artifact["size"] == len("model of 4")
    assert run["tags"]["team"] == "sales"
    text = ok(kiln(project, "runs", "show", "last")).stdout
    assert "absent.csv (not hashed: No such file or directory)" in text
    for line in ("environment:", "git:", "x.csv", "metric: loss: 4 points, last 0.25", "artifact:"):
        assert line in text
    # the library reads the same history
    code = (
        "import kiln, json; r = kiln.read_run('last'); "
        "print(json.dumps([r.metric_series['loss'][-1], sorted(r.artifact_paths)]))"
    )
    read = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=project, check=True
    )
    assert json.loads(read.stdout) == [[3, 0.25], ["model.txt"]]


def test_the_environment_is_stored_once_for_many_runs(project: Path) -> None:
    for n in range(4):
        ok(kiln(project, "run", "nb.ipynb", "-p", "n", str(n + 1)))
    ok(kiln(project, "run", "nb.ipynb", "--engine", "kernel"))
    with _db(project) as db:
        hashes = {h for (h,) in db.execute("SELECT environment_hash FROM runs")}
        stored = db.execute("SELECT count(*) FROM environments").fetchone()[0]
    # both engines run this venv's Python: one environment, stored once
    assert len(hashes) == 1 and None not in hashes
    assert stored == 1


# -- rerun --------------------------------------------------------------------------------------


def test_a_rerun_after_an_input_file_changed_says_so_and_compares(project: Path) -> None:
    first = ok(kiln(project, "run", "nb.ipynb", "--tag", "team=sales"))
    original = show(project)
    nbformat.write(build_notebook(["print('edited since')"]), project / "nb.ipynb")
    with open(project / "data" / "x.csv", "a") as handle:
        handle.write("3,4\n")
    dry = ok(kiln(project, "rerun", original["id"], "--dry-run"))
    x_csv = str(project / "data" / "x.csv")
    assert f"input changed: {x_csv}" in dry.stderr
    assert "nb.ipynb has changed since the run" in dry.stderr
    assert "git:" in dry.stderr  # x.csv is tracked: the working tree is dirty now
    done = ok(kiln(project, "rerun", original["id"], "-p", "label", "b"))
    assert "input changed" in done.stderr and "overrides" in done.stderr
    # the stored copy ran, not the edited notebook: same records, one more row
    assert "record total" in done.stdout and "9 (+3)" in done.stdout
    assert "outputs: differ from cell" in done.stdout
    rerun = show(project)
    assert rerun["id"] != original["id"] and first.returncode == 0
    assert rerun["origin"] == {"rerun_of": original["id"], "overrides": {"label": "b"}}
    assert rerun["parameters"] == {"label": "b"}
    assert rerun["tags"]["team"] == "sales"
    assert rerun["notebook_sha256"] == original["notebook_sha256"]


def test_a_rerun_of_an_unchanged_run_says_nothing_changed_and_outputs_match(
    project: Path,
) -> None:
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "2"))
    done = ok(kiln(project, "rerun", "last"))
    assert "nothing recorded has changed since" in done.stderr
    assert "outputs: the same" in done.stdout


@pytest.fixture
def tiny_kernel(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """A separate venv as a Jupyter kernel named ``tinypkg`` (found through JUPYTER_PATH), and
    the folder holding the wheels of kilntinypkg 1.0 and 2.0."""
    try:
        venv = package_venv()
    except (VenvUnavailable, subprocess.CalledProcessError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the package venv must build in CI: {exc}", pytrace=False)
        pytest.skip(f"cannot build the package venv: {exc}")
    jupyter = tmp_path / "jupyter"
    spec = jupyter / "kernels" / "tinypkg"
    spec.mkdir(parents=True)
    argv = [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    # the notebook imports kiln (kiln.record, all a kernel needs of it): the Kiln under test,
    # which this venv does not hold, is put on the kernel's path
    import kiln as kiln_package

    kiln_src = str(Path(kiln_package.__file__).resolve().parents[1])
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": argv,
                "display_name": "tinypkg",
                "language": "python",
                "env": {"PYTHONPATH": kiln_src},
            }
        )
    )
    wheels = tmp_path / "wheels"
    build_tiny_package(wheels, "1.0")
    build_tiny_package(wheels, "2.0")
    return venv, {"JUPYTER_PATH": str(jupyter)}, wheels


def test_a_rerun_after_a_package_upgrade_shows_the_change(
    project: Path, tiny_kernel: tuple[Path, dict[str, str], Path]
) -> None:
    venv, env, sources = tiny_kernel
    cells = [
        ("n = 1", ["parameters"]),
        "import kiln, kilntinypkg\nkiln.record('v', kilntinypkg.VERSION)",
    ]
    nbformat.write(build_notebook(cells, kernel="tinypkg"), project / "pkg.ipynb")
    install_tiny_package(venv, sources / "kilntinypkg-1.0-py3-none-any.whl")
    ok(kiln(project, "run", "pkg.ipynb", "--engine", "kernel", env=env))
    before = show(project)
    assert dict(before["environment"]["packages"])["kilntinypkg"] == "1.0"
    install_tiny_package(venv, sources / "kilntinypkg-2.0-py3-none-any.whl")
    done = ok(kiln(project, "rerun", before["id"], env=env))
    assert "packages changed: kilntinypkg 1.0 -> 2.0" in done.stderr
    assert "differs" in done.stdout  # record v: "1.0" -> "2.0"
    after = show(project)
    assert after["environment_hash"] != before["environment_hash"]
    compared = json.loads(
        ok(kiln(project, "runs", "compare", before["id"], after["id"], "--json")).stdout
    )
    assert compared["environment"]["packages_changed"][1]["changed"] == [
        ["kilntinypkg", "1.0", "2.0"]
    ]
    assert compared["records"]["v"]["values"] == ["1.0", "2.0"]


# -- compare, list, tags ------------------------------------------------------------------------


def test_compare_numeric_and_non_numeric_records(project: Path) -> None:
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "2", "-p", "label", "a", "--engine", "kernel"))
    a = show(project)["id"]
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "5", "-p", "label", "b"))
    b = show(project)["id"]
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "5", "-p", "label", "b"))
    c = show(project)["id"]
    data = json.loads(ok(kiln(project, "runs", "compare", a, b, c, "--json")).stdout)
    assert data["runs"] == [a, b, c]
    total = data["records"]["total"]
    assert total["values"] == [4, 10, 10] and total["deltas"] == [None, 6.0, 6.0]
    assert not total["same"]
    label = data["records"]["label"]
    assert label["values"] == ["a", "b", "b"] and "deltas" not in label and not label["same"]
    assert data["parameters"]["n"]["deltas"] == [None, 3.0, 3.0]
    assert data["metrics"]["loss (points)"]["values"] == [2, 5, 5]
    assert data["run"]["engine"]["values"] == ["kernel", "fork", "fork"]
    assert data["environment"]["hash"]["same"] and data["git"]["commit"]["same"]
    assert "records.total" in data["differences"] and "environment.hash" not in data["differences"]
    assert set(data["cells"]) == {"cell 0", "cell 1", "cell 2", "cell 3"}
    text = ok(kiln(project, "runs", "compare", a, b)).stdout
    assert "10 (+6)" in text and "label" in text
    same = ok(kiln(project, "runs", "compare", b, c)).stdout
    assert "records" not in same.split("the same in every run")[0]  # only differences shown
    assert "records" in same.split("the same in every run")[1]


def test_list_with_record_columns_and_tags(project: Path) -> None:
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "2", "--tag", "team=sales", "--tag", "x=1"))
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "3", "--tag", "team=ops"))
    ok(kiln(project, "run", "nb.ipynb", "-p", "n", "4"))
    table = ok(kiln(project, "runs", "list", "--records", "total,label,absent")).stdout
    header, *rows = table.splitlines()
    assert "TOTAL" in header and "LABEL" in header and "ABSENT" in header
    assert [r.split()[7] for r in rows] == ["8", "6", "4"]
    listed = json.loads(
        ok(
            kiln(project, "runs", "list", "--tag", "team=sales", "--records", "total", "--json")
        ).stdout
    )
    assert [r["columns"] for r in listed] == [{"total": 4}]
    assert listed[0]["tags"]["x"] == "1"
    both = json.loads(ok(kiln(project, "runs", "list", "--tag", "team=ops", "--json")).stdout)
    assert [r["parameters"]["n"] for r in both] == [3]
    none = kiln(project, "runs", "list", "--tag", "team=nobody")
    assert none.returncode == 0 and "No runs match" in none.stderr
    bad = kiln(project, "runs", "list", "--tag", "team")
    assert bad.returncode == 2 and "KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr
    code = "import kiln; print([r.parameters['n'] for r in kiln.list_runs(tags={'team': 'ops'})])"
    api = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=project, check=True
    )
    assert api.stdout.strip() == "[3]"


def test_export_and_plot_the_history(project: Path, tmp_path: Path) -> None:
    for n in (1, 2, 3):
        ok(kiln(project, "run", "nb.ipynb", "-p", "n", str(n)))
    csv_text = ok(kiln(project, "runs", "export")).stdout
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert sorted(r["record.total"] for r in rows) == ["2", "4", "6"]
    assert {r["metric.loss"] for r in rows} == {"1.0", "0.5", str(1.0 / 3)}
    chart = tmp_path / "chart.png"
    done = ok(
        kiln(
            project, "runs", "plot", "nb.ipynb", "--record", "total", "--by", "n", "-o", str(chart)
        )
    )
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "3 runs" in done.stderr
    refused = kiln(project, "runs", "plot", "nb.ipynb", "--record", "label", "-o", str(chart))
    assert refused.returncode == 2 and "as a number" in refused.stderr
    (tmp_path / "a-file").write_text("")
    nowhere = tmp_path / "a-file" / "out"  # its folder is a file
    for command in (
        ("runs", "export", "-o", f"{nowhere}.csv"),
        ("runs", "plot", "nb.ipynb", "--record", "total", "-o", f"{nowhere}.png"),
    ):
        refused = kiln(project, *command)
        assert refused.returncode == 2 and f"cannot write {nowhere}" in refused.stderr, command
        assert "Internal error" not in refused.stderr


# -- retention ----------------------------------------------------------------------------------

HOLD = [
    ("gate = ''", ["parameters"]),
    "import os, time\nwhile not os.path.exists(gate):\n    time.sleep(0.05)",
]


def test_prune_never_touches_a_running_run(project: Path) -> None:
    nbformat.write(build_notebook(HOLD), project / "hold.ipynb")
    for n in (1, 2):
        ok(kiln(project, "run", "nb.ipynb", "-p", "n", str(n)))
    gate = project / "gate"
    held = subprocess.Popen(
        [KILN, "run", "hold.ipynb", "-p", "gate", str(gate)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def running() -> str | None:
            with _db(project) as db:
                row = db.execute(
                    "SELECT id FROM runs WHERE state = 'running' AND notebook_path LIKE '%hold%'"
                ).fetchone()
            return row[0] if row else None

        run_id = wait_for(running, timeout=60, what="the held run to be running")
        pruned = json.loads(ok(kiln(project, "runs", "prune", "--keep-last", "0", "--json")).stdout)
        assert len(pruned["runs"]) == 2 and run_id not in {r["id"] for r in pruned["runs"]}
        refused = kiln(project, "runs", "prune", "--state", "running")
        assert refused.returncode == 2
        live = show(project, run_id)
        assert live["state"] == "running" and Path(live["run_dir"]).is_dir()
        assert Path(live["input_path"]).is_file()
        gate.write_text("go")
        _out, err = held.communicate(timeout=120)
        assert held.returncode == 0, err
    finally:
        if held.poll() is None:
            held.kill()
            held.wait()
    assert show(project, run_id)["state"] == "succeeded"


_KILLED_PRUNE = textwrap.dedent(
    """
    import os, signal, sys
    from kiln.store import retention

    calls = 0
    remove = retention._remove_folder

    def remove_then_die(store, run_dir):
        global calls
        calls += 1
        if calls > int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)  # mid-prune: rows gone, folders half gone
        return remove(store, run_dir)

    retention._remove_folder = remove_then_die
    retention.BATCH = 4
    from kiln.cli.main import main
    main(["runs", "prune", "--keep-last", "0"])
    """
)


def _consistent(root: Path) -> tuple[set[str], set[str]]:
    """Every row's folder and input copy exist; returns (row ids, folder names)."""
    home = root / ".kiln"
    with _db(root) as db:
        rows = db.execute("SELECT id, run_dir, input_path FROM runs").fetchall()
    for run_id, run_dir, input_path in rows:
        assert Path(run_dir).is_dir(), f"run {run_id} lost its folder"
        assert Path(input_path).is_file(), f"run {run_id} lost its input copy"
    folders = {p.name for p in (home / "runs").iterdir()}
    return {r[0] for r in rows}, folders


def test_a_prune_killed_midway_leaves_a_consistent_history(project: Path) -> None:
    other = build_notebook([("x = 1", ["parameters"]), "print(x)"])
    nbformat.write(other, project / "other.ipynb")
    for n in range(10):
        ok(kiln(project, "run", "nb.ipynb", "-p", "n", str(n + 1)))
    ok(kiln(project, "run", "other.ipynb", "--queue"))  # no worker: it stays queued
    kept_id = show(project)["id"]
    assert show(project)["state"] == "queued"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_PRUNE, "6"], cwd=project, capture_output=True, text=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    rows, folders = _consistent(project)
    assert 0 < len(rows) < 11 and kept_id in rows
    # what the kill left behind is garbage: folders without rows, nothing else
    assert rows < folders
    leftovers = folders - rows
    past = time.time() - 3600
    for name in leftovers:
        os.utime(project / ".kiln" / "runs" / name, (past, past))
    for copy in (project / ".kiln" / "inputs").iterdir():
        os.utime(copy, (past, past))
    done = json.loads(ok(kiln(project, "runs", "prune", "--keep-last", "0", "--json")).stdout)
    assert done["orphan_folders"] == len(leftovers)
    rows, folders = _consistent(project)
    assert rows == folders == {kept_id}
    # the queued run's input copy stays; nb.ipynb's copy went with its last run
    inputs = list((project / ".kiln" / "inputs").iterdir())
    assert len(inputs) == 1 and len(done["inputs"]) == 1
