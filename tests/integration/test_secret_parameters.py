"""A parameter annotated ``Secret`` in the parameters cell (``from kiln import Secret``):
the notebook receives the real value, and a canary given with ``-p`` is found nowhere
else: not in any file of the run folder (output notebook, its metadata, logs), not in the
history database, not in the command's output, not in ``kiln runs show``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import nbformat
import pytest

from kilntest import KILN, build_notebook

pytestmark = pytest.mark.kernel

CANARY = "CANARY-4f1c9e2a7b-not-for-anyone"

NOTEBOOK = [
    ('from kiln import Secret\napi_key: Secret = ""\nregion = "eu"', ["parameters"]),
    "import kiln\nkiln.record('key_length', len(api_key))\n"
    "kiln.record('is_str', type(api_key) is str)",
    "print('the key is', api_key)",
    "raise_it = False\nif raise_it:\n    raise ValueError(api_key)",
]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KILN_")}
    env["KILN_HOME"] = str(home)
    return env


def _kiln(root: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KILN, *args], cwd=root, env=_env(home), capture_output=True, text=True, timeout=240
    )


def _holding(folder: Path, secret: bytes) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.parametrize("engine", ["kernel", "fork"])
def test_a_secret_parameter_is_masked_everywhere(tmp_path: Path, engine: str) -> None:
    home = tmp_path / "home"
    nbformat.write(build_notebook(NOTEBOOK), tmp_path / "nb.ipynb")
    done = _kiln(tmp_path, home, "run", "nb.ipynb", "-p", "api_key", CANARY, "-p", "region",
                 "us", "--engine", engine, "--log-output", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout and CANARY not in done.stderr
    # the live echo, then the run as JSON
    echo, _, document = done.stdout.partition("\n{")
    assert echo == "the key is ***"
    run = json.loads("{" + document)
    # the notebook had the real value
    assert run["records"]["key_length"] == len(CANARY) and run["records"]["is_str"] is True
    assert run["parameters"] == {"api_key": "***", "region": "us"}
    run_dir = Path(run["run_dir"])
    assert _holding(run_dir, CANARY.encode()) == []
    output = nbformat.read(run_dir / "output.ipynb", as_version=4)
    injected = next(c for c in output.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'api_key = "***"' in injected.source or "api_key = '***'" in injected.source
    assert "the key is ***" in json.dumps(output.cells[3]["outputs"])
    for key in ("kiln", "papermill"):
        shown = json.dumps(output.metadata.get(key, {}))
        assert CANARY not in shown
    assert output.metadata["papermill"]["parameters"]["api_key"] == "***"
    # the history: every database file, every row
    assert _holding(home, CANARY.encode()) == []
    shown = _kiln(tmp_path, home, "runs", "show", run["id"], "--json")
    assert shown.returncode == 0 and CANARY not in shown.stdout + shown.stderr
    log = _kiln(tmp_path, home, "runs", "logs", run["id"])
    assert log.returncode == 0 and "the key is ***" in log.stdout
    assert CANARY not in log.stdout + log.stderr


def test_kiln_params_shows_a_secret(tmp_path: Path) -> None:
    nbformat.write(build_notebook(NOTEBOOK), tmp_path / "nb.ipynb")
    shown = _kiln(tmp_path, tmp_path / "home", "params", "nb.ipynb")
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("api_key"))
    assert "str (secret)" in line
    as_json = json.loads(_kiln(tmp_path, tmp_path / "home", "params", "nb.ipynb", "--json").stdout)
    secret = {p["name"]: p["secret"] for p in as_json["parameters"]}
    assert secret == {"api_key": True, "region": False}


def test_a_queued_run_refuses_a_secret_value(tmp_path: Path) -> None:
    nbformat.write(build_notebook(NOTEBOOK), tmp_path / "nb.ipynb")
    home = tmp_path / "home"
    done = _kiln(tmp_path, home, "run", "nb.ipynb", "-p", "api_key", CANARY, "--queue")
    assert done.returncode == 2
    assert "parameter 'api_key' is declared Secret" in done.stderr
    assert "Traceback" not in done.stderr and CANARY not in done.stderr
    assert _holding(home, CANARY.encode()) == [] if home.exists() else True
