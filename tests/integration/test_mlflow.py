"""Each run as an MLflow run, against a local SQLite store and a real ``mlflow server`` on
127.0.0.1: parameters, numeric records, metric series, tags and artefacts arrive; a server
that is down leaves a warning on a run that still succeeds, and ``kiln runs sync-mlflow``
uploads it later.

MLflow is an extra, not in the test venv: Kiln runs (from ``src/``) in a separate venv with the
full ``mlflow`` (``~/.cache/kiln/mlflow-venv``, built on first use by pip; without an index
the tests skip, except in CI). Building it takes about five minutes on a slow network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from tracking_util import VenvUnavailable, free_port, mlflow_venv, wait_for_port

import kiln

from kilntest import build_notebook

pytestmark = pytest.mark.kernel

SRC = str(Path(kiln.__file__).resolve().parents[1])

NOTEBOOK = [
    ("n = 3\nlabel = 'a'", ["parameters"]),
    "import kiln\nkiln.record('total', 2 * n)\nkiln.record('label', label)\n"
    "kiln.record('flag', True)",
    "for epoch in range(n):\n    kiln.metric('loss', 1.0 / (epoch + 1), step=epoch)\n"
    "with open('model.txt', 'w') as f:\n    f.write('weights')\nkiln.artifact('model.txt')",
]

#: what MLflow holds of one experiment's runs, read with MLflow's own client
_READ = """
import json, sys
from mlflow.tracking import MlflowClient
client = MlflowClient(tracking_uri=sys.argv[1])
exp = client.get_experiment_by_name(sys.argv[2])
out = []
for run in client.search_runs([exp.experiment_id]) if exp else []:
    def files(path=None):
        found = []
        for item in client.list_artifacts(run.info.run_id, path):
            found += files(item.path) if item.is_dir else [item.path]
        return found
    out.append({
        "status": run.info.status,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": {k: v for k, v in run.data.tags.items()},
        "loss": [[m.step, m.value] for m in client.get_metric_history(run.info.run_id, "loss")],
        "artifacts": sorted(files()),
    })
print(json.dumps(out))
"""


@pytest.fixture(scope="session")
def mlflow_python() -> Path:
    started = time.monotonic()
    try:
        venv = mlflow_venv()
    except (VenvUnavailable, subprocess.SubprocessError, OSError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the MLflow venv must build in CI: {exc}", pytrace=False)
        pytest.skip(f"cannot install mlflow in a venv of its own: {exc}")
    took = time.monotonic() - started
    if took > 60:
        print(f"\nbuilt the MLflow venv in {took:.0f} s", file=sys.stderr)
    return venv / "bin" / "python"


def kiln_m(
    python: Path, root: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The `kiln` command, from this checkout's src/, in the MLflow venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_HOME", "MLFLOW_TRACKING_URI")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.run(
        [str(python), "-c", "from kiln.cli.main import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=root,
        env=env,
    )


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def in_mlflow(python: Path, uri: str, experiment: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [str(python), "-c", _READ, uri, experiment],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    root.mkdir()
    nbformat.write(build_notebook(NOTEBOOK), root / "train.ipynb")
    if shutil.which("git"):
        env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org")
        env.update(GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "one"]):
            subprocess.run(["git", "-C", str(root), *args], check=True, env=env)
    return root


def show(python: Path, root: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        ok(kiln_m(python, root, "runs", "show", "last", "--json")).stdout
    )
    return data


def check_exported(found: dict[str, Any], run: dict[str, Any]) -> None:
    """Parameters, numeric records, the metric series, tags and artefacts are in MLflow."""
    assert found["status"] == "FINISHED"
    assert found["params"] == {"n": "4", "label": "b"}
    assert found["metrics"]["total"] == 8.0
    assert "label" not in found["metrics"] and "flag" not in found["metrics"]
    assert found["loss"] == [[0, 1.0], [1, 0.5], [2, 1.0 / 3], [3, 0.25]]
    tags = found["tags"]
    assert tags["kiln.run_id"] == run["id"]
    assert tags["kiln.notebook"] == run["notebook_path"]
    assert tags["kiln.environment"] == run["environment_hash"]
    assert tags["team"] == "ml"
    if run["git"]:
        assert tags["kiln.git_commit"] == run["git"]["commit"]
    assert found["artifacts"] == ["artifacts/model.txt", "output.ipynb"]


def test_a_run_is_recorded_in_a_local_mlflow_store(
    mlflow_python: Path, project: Path, tmp_path: Path
) -> None:
    (project / "kiln.yaml").write_text(
        "tracking:\n  mlflow:\n    uri: sqlite:///mlflow.db\n    experiment: forecasts\n"
    )
    done = ok(
        kiln_m(
            mlflow_python,
            project,
            "run",
            "train.ipynb",
            "-p",
            "n",
            "4",
            "-p",
            "label",
            "b",
            "--tag",
            "team=ml",
        )
    )
    assert "MLflow" not in done.stderr and "INFO" not in done.stderr
    run = show(mlflow_python, project)
    assert run["mlflow"]["state"] == "done" and run["mlflow"]["experiment"] == "forecasts"
    # the relative URI is from the project root
    uri = f"sqlite:///{project / 'mlflow.db'}"
    assert run["mlflow"]["uri"] == uri
    [found] = in_mlflow(mlflow_python, uri, "forecasts")
    check_exported(found, run)
    assert found["tags"]["kiln.run_id"] == run["id"]


def test_kiln_run_without_tracking_imports_nothing_of_mlflow(
    mlflow_python: Path, project: Path
) -> None:
    code = (
        "import sys\nfrom kiln.cli.main import run_main\n"
        "code = run_main(['run', 'train.ipynb', '-q'])\n"
        "print(code, [m for m in sys.modules if m.startswith(('mlflow', 'kiln.mlflow_export'))])"
    )
    env = {k: v for k, v in os.environ.items() if k != "KILN_HOME"}
    env["PYTHONPATH"] = SRC
    done = subprocess.run(
        [str(mlflow_python), "-c", code], capture_output=True, text=True, cwd=project, env=env
    )
    assert done.stdout.split("\n")[-2] == "0 []", done.stdout + done.stderr


class MlflowServer:
    """A real ``mlflow server`` on 127.0.0.1, stopped and started again on the same port and
    the same stores."""

    def __init__(self, python: Path, folder: Path) -> None:
        self.mlflow = python.with_name("mlflow")
        self.folder = folder
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.mlflow),
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--backend-store-uri",
                    f"sqlite:///{self.folder / 'server.db'}",
                    "--artifacts-destination",
                    str(self.folder / "artifacts"),
                    "--workers",
                    "1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
                start_new_session=True,
            )
        try:
            wait_for_port(self.port, self.process, time.monotonic() + 180)
        except RuntimeError as exc:
            self.stop()
            tail = (self.folder / "server.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"mlflow server did not start: {exc}\n{tail}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        # the server's own workers are in its session: end them all by its process group
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture
def mlflow_server(mlflow_python: Path, tmp_path: Path) -> Iterator[MlflowServer]:
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    server = MlflowServer(mlflow_python, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_a_run_is_recorded_on_an_mlflow_server_and_synced_after_an_outage(
    mlflow_python: Path, project: Path, mlflow_server: MlflowServer
) -> None:
    uri = mlflow_server.uri
    args = ("run", "train.ipynb", "-p", "n", "4", "-p", "label", "b", "--tag", "team=ml")
    # the output notebook on standard output stays a notebook: nothing of MLflow's in it
    piped = ok(kiln_m(mlflow_python, project, *args[:2], "-", *args[2:], "--mlflow-uri", uri))
    assert nbformat.reads(piped.stdout, as_version=4).cells
    first = show(mlflow_python, project)
    assert first["mlflow"]["state"] == "done"
    [found] = in_mlflow(mlflow_python, uri, "train")
    check_exported(found, first)

    mlflow_server.stop()
    down = ok(kiln_m(mlflow_python, project, *args, "--mlflow-uri", uri))
    assert "MLflow" in down.stderr and "sync-mlflow" in down.stderr
    second = show(mlflow_python, project)
    assert second["state"] == "succeeded"
    assert second["mlflow"]["state"] == "failed" and second["mlflow"]["error"]
    log = Path(second["log_path"]).read_text()
    assert "warning: MLflow" in log
    text = ok(kiln_m(mlflow_python, project, "runs", "show", "last")).stdout
    assert "mlflow: failed" in text and "kiln runs sync-mlflow tries again" in text
    still_down = kiln_m(mlflow_python, project, "runs", "sync-mlflow")
    assert still_down.returncode == 1 and second["id"] in (still_down.stdout + still_down.stderr)

    mlflow_server.start()
    synced = ok(kiln_m(mlflow_python, project, "runs", "sync-mlflow", "--json"))
    results = json.loads(synced.stdout)
    assert [(r["run"], r["ok"]) for r in results] == [(second["id"], True)]
    assert show(mlflow_python, project)["mlflow"]["state"] == "done"
    runs = in_mlflow(mlflow_python, uri, "train")
    by_id = {r["tags"]["kiln.run_id"]: r for r in runs}
    assert set(by_id) == {first["id"], second["id"]}  # each once
    check_exported(by_id[second["id"]], second)
    # nothing is owed any more
    again = json.loads(ok(kiln_m(mlflow_python, project, "runs", "sync-mlflow", "--json")).stdout)
    assert again == []
