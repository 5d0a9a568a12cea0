"""papermill's command lines, typed as papermill users type them, through both tools.

Each case runs ``papermill IN OUT ARGS`` and ``kiln run IN OUT ARGS`` and compares the exit code
and the parameters that arrived in the notebook, except where the README lists a deliberate
difference (unknown names refused; a value typed by the declared type: ``-p flag false`` is the
bool False, ``-p ratio 1`` the float 1.0).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from kilntest import KILN, build_notebook, read_nb

pytestmark = pytest.mark.kernel

PAPERMILL = str(Path(sys.executable).with_name("papermill"))
PARAMS = (
    "msg = 'default'\nn = 1\nratio = 0.5\nflag = False\nitems = [1]\n"
    "PAPERMILL_INPUT_PATH = None\nPAPERMILL_OUTPUT_PATH = None"
)
REPORT = (
    "import json\nprint(json.dumps({k: globals()[k] for k in ['msg', 'n', 'ratio', 'flag', "
    "'items', 'PAPERMILL_INPUT_PATH', 'PAPERMILL_OUTPUT_PATH']}))"
)


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "in.ipynb"
    nbformat.write(build_notebook([(PARAMS, ["parameters"]), REPORT]), path)
    (tmp_path / "params.yaml").write_text("msg: from-file\nitems: [a, b]\n")
    (tmp_path / "work").mkdir()
    return path


def _received(output: Path) -> dict[str, Any] | None:
    try:
        cell = read_nb(output).cells[-1]
    except (OSError, ValueError):
        return None
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            value: dict[str, Any] = json.loads(out["text"])
            return value
    return None


def _both(notebook: Path, args: list[str], tmp_path: Path) -> dict[str, Any]:
    env = dict(os.environ, KILN_HOME=str(tmp_path / "home"), PYTHONWARNINGS="ignore")
    results = {}
    for tool, base in (("papermill", [PAPERMILL]), ("kiln", [KILN, "run"])):
        out = tmp_path / f"{tool}.ipynb"
        argv = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
        done = subprocess.run(
            [*base, str(notebook), str(out), *argv],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=180,
        )
        results[tool] = {"code": done.returncode, "params": _received(out), "stderr": done.stderr}
    return results


SAME = [
    ("p", ["-p", "msg", "hello", "-p", "n", "3"]),
    ("raw", ["-r", "msg", "42", "--parameters_raw", "msg", "43"]),
    ("yaml", ["-y", "items: [1, 'a', null]", "--parameters_yaml", "n: 4"]),
    ("file", ["-f", "{tmp}/params.yaml"]),
    ("file-underscore", ["--parameters_file", "{tmp}/params.yaml", "-p", "n", "2"]),
    ("base64", ["-b", base64.b64encode(b"msg: b64\nn: 9").decode()]),
    ("base64-long", ["--parameters_base64", base64.b64encode(b"items: [x]").decode()]),
    ("later-wins", ["-p", "n", "1", "-y", "n: 2", "-p", "n", "3"]),
    ("inject-paths", ["--inject-paths"]),
    ("inject-input", ["--inject-input-path", "--inject-output-path"]),
    ("timeouts", ["--start-timeout", "60", "--start_timeout", "60", "--execution-timeout", "30"]),
    ("logging", ["--log-output", "--no-log-output", "--log-level", "INFO", "--no-progress-bar"]),
    ("report-mode", ["--report-mode", "--no-report-mode", "--progress-bar"]),
    ("kernel-language", ["-k", "python3", "-l", "python", "--cwd", "{tmp}/work"]),
    ("saves", ["--request-save-on-cell-execute", "--autosave-cell-every", "10"]),
    ("no-save-request", ["--no-request-save-on-cell-execute", "--prepare-execute"]),
    ("files", ["--stdout-file", "{tmp}/out.txt", "--stderr-file", "{tmp}/err.txt"]),
    ("engine-name", ["--engine", "nbclient", "-p", "msg", "x"]),
]


@pytest.mark.parametrize("args", [c[1] for c in SAME], ids=[c[0] for c in SAME])
def test_same_command_line_same_result(notebook: Path, tmp_path: Path, args: list[str]) -> None:
    got = _both(notebook, args, tmp_path)
    assert got["kiln"]["code"] == got["papermill"]["code"] == 0, got
    kiln_params, pm_params = got["kiln"]["params"], got["papermill"]["params"]
    assert kiln_params is not None and pm_params is not None, got
    out = kiln_params.get("PAPERMILL_OUTPUT_PATH")
    if out is not None:  # each tool wrote its own output file
        assert out == str(tmp_path / "kiln.ipynb")
        kiln_params["PAPERMILL_OUTPUT_PATH"] = pm_params["PAPERMILL_OUTPUT_PATH"]
    assert kiln_params == pm_params, got


def test_stdout_file_gets_the_cells_output(notebook: Path, tmp_path: Path) -> None:
    _both(notebook, ["--stdout-file", "{tmp}/out.txt", "-p", "msg", "tee"], tmp_path)
    assert '"msg": "tee"' in (tmp_path / "out.txt").read_text()


DIFFERENT = [
    # (id, args, kiln exit, what kiln receives / says)
    ("unknown-name", ["-p", "nope", "1"], 2, "unknown parameter 'nope'"),
    ("bool-word", ["-p", "flag", "false"], 0, {"flag": False}),
    ("float-from-int", ["-p", "ratio", "1"], 0, {"ratio": 1.0}),
    ("wrong-type", ["-p", "n", "many"], 2, "parameter 'n' of"),
    ("raw-for-an-int", ["-r", "n", "7"], 2, "expects int, got str '7'"),
]


@pytest.mark.parametrize(
    ("args", "code", "expected"), [c[1:] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT]
)
def test_deliberate_differences(
    notebook: Path, tmp_path: Path, args: list[str], code: int, expected: Any
) -> None:
    got = _both(notebook, args, tmp_path)
    assert got["papermill"]["code"] == 0  # papermill runs it anyway
    assert got["kiln"]["code"] == code, got
    if isinstance(expected, str):
        assert expected in got["kiln"]["stderr"]
        assert "Traceback" not in got["kiln"]["stderr"]
    else:
        params = got["kiln"]["params"]
        assert params is not None
        for key, value in expected.items():
            assert params[key] == value and type(params[key]) is type(value)


def test_prepare_only_injects_without_executing(notebook: Path, tmp_path: Path) -> None:
    got = _both(notebook, ["--prepare-only", "-p", "n", "5"], tmp_path)
    assert got["kiln"]["code"] == got["papermill"]["code"] == 0
    for tool in ("kiln", "papermill"):
        nb = read_nb(tmp_path / f"{tool}.ipynb")
        assert nb.cells[1].source == "# Parameters\nn = 5\n"
        assert nb.cells[-1].outputs == []
    assert (
        json.loads(
            subprocess.run(
                [KILN, "runs", "show", "last", "--json"],
                capture_output=True,
                text=True,
                env=dict(os.environ, KILN_HOME=str(tmp_path / "home")),
                check=True,
            ).stdout
        )["state"]
        == "prepared"
    )


def test_dash_reads_stdin_and_writes_stdout(notebook: Path, tmp_path: Path) -> None:
    env = dict(os.environ, KILN_HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [KILN, "run", "-", "-", "-p", "msg", "piped", "--log-output"],
        input=notebook.read_bytes(),
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = nbformat.reads(done.stdout.decode(), as_version=4)  # nothing else on stdout
    assert '"msg": "piped"' in out.cells[-1].outputs[0]["text"]
    assert b"Executing cell" in done.stderr  # --log-output went to stderr
    shown = subprocess.run(
        [KILN, "runs", "show", "last", "--json"], capture_output=True, text=True, env=env
    )
    assert json.loads(shown.stdout)["notebook_path"] == "<stdin>"


def test_output_notebook_carries_papermills_metadata(notebook: Path, tmp_path: Path) -> None:
    got = _both(notebook, ["-p", "n", "3"], tmp_path)
    assert got["kiln"]["code"] == 0
    kiln_nb, pm_nb = read_nb(tmp_path / "kiln.ipynb"), read_nb(tmp_path / "papermill.ipynb")
    ours, theirs = kiln_nb.metadata["papermill"], pm_nb.metadata["papermill"]
    assert set(theirs) <= set(ours)
    assert ours["parameters"] == theirs["parameters"] == {"n": 3}
    assert ours["default_parameters"]["msg"] == "default"
    assert ours["exception"] is False and ours["duration"] > 0
    cell = kiln_nb.cells[-1].metadata["papermill"]
    assert cell["status"] == "completed" and set(pm_nb.cells[-1].metadata["papermill"]) <= set(cell)


def test_file_and_http_urls(notebook: Path, tmp_path: Path) -> None:
    import http.server
    import threading

    handler = lambda *a: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(tmp_path)
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/in.ipynb"
        target = f"file://{tmp_path}/from-url.ipynb"
        env = dict(os.environ, KILN_HOME=str(tmp_path / "home"))
        done = subprocess.run(
            [KILN, "run", url, target, "-p", "msg", "remote"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert _received(tmp_path / "from-url.ipynb")["msg"] == "remote"  # type: ignore[index]
        missing = subprocess.run(
            [KILN, "run", url.replace("in.ipynb", "nope.ipynb")],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert missing.returncode == 2 and "HTTP 404" in missing.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_python_api_takes_papermills_call(notebook: Path, tmp_path: Path, home: Path) -> None:
    import kiln.papermill as pm
    from kiln.papermill import PapermillExecutionError

    out = tmp_path / "api.ipynb"
    nb = pm.execute_notebook(
        notebook, out, parameters={"msg": "api", "n": 2}, progress_bar=False, kernel_name="python3"
    )
    assert '"msg": "api"' in nb.cells[-1].outputs[0]["text"]
    assert nb.metadata["papermill"]["parameters"] == {"msg": "api", "n": 2}
    assert pm.inspect_notebook(notebook)["n"]["inferred_type_name"] == "int"
    failing = tmp_path / "fail.ipynb"
    nbformat.write(build_notebook(["x = 1", "raise ValueError('boom')"]), failing)
    with pytest.raises(PapermillExecutionError) as info:
        pm.execute_notebook(failing, tmp_path / "fail-out.ipynb")
    assert info.value.ename == "ValueError" and info.value.exec_count == 2
    assert "boom" in info.value.source
    assert (tmp_path / "fail-out.ipynb").exists()
