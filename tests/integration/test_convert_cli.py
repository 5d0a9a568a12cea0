"""clean / diff / export / git install with the real `kiln` command: a real git repository, a
real kernel run compared with the exported script, and jupytext's notebooks from the corpus."""

from __future__ import annotations

import ast
import json
import os
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
import yaml
from corpus_util import CORPUS, corpus_path
from nbformat.v4 import new_code_cell, new_notebook, new_output

import kiln
from kiln.convert.clean import clean_text
from kiln.convert.export import export_script
from kiln.notebook import load_notebook

ROOT = Path(__file__).resolve().parents[2]


def _with_outputs(source_n: int = 3, printed: str = "3\n") -> Any:
    cells = [
        new_code_cell(f"n = {source_n}", metadata={"tags": ["parameters"]}, execution_count=1),
        new_code_cell(
            "print(n)",
            execution_count=2,
            outputs=[new_output("stream", name="stdout", text=printed)],
        ),
    ]
    kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return new_notebook(cells=cells, metadata={"kernelspec": kernelspec})


# -- clean and diff through the real command ----------------------------------------------------


def test_clean_check_then_clean_then_check(kiln_cli, tmp_path):
    nb = tmp_path / "nb.ipynb"
    nbformat.write(_with_outputs(), nb)
    res = kiln_cli("clean", "--check", "nb.ipynb")
    assert res.returncode == 1 and res.stdout.startswith("nb.ipynb: not clean")
    assert kiln_cli("clean", ".").returncode == 0
    assert kiln_cli("clean", "--check", ".").returncode == 0
    piped = kiln_cli("clean", "--stdout", "-", input=nb.read_text())
    assert piped.returncode == 0 and piped.stdout == nb.read_text()


def test_diff_exit_codes(kiln_cli, tmp_path):
    nbformat.write(_with_outputs(3), tmp_path / "a.ipynb")
    nbformat.write(_with_outputs(3), tmp_path / "same.ipynb")
    nbformat.write(_with_outputs(4, "4\n"), tmp_path / "b.ipynb")
    assert kiln_cli("diff", "a.ipynb", "same.ipynb").returncode == 0
    res = kiln_cli("diff", "a.ipynb", "b.ipynb")
    assert res.returncode == 1 and "-n = 3\n    +n = 4" in res.stdout
    assert "\x1b[" not in res.stdout  # not a terminal: plain
    assert kiln_cli("diff", "a.ipynb", "missing.ipynb").returncode == 2


# -- git ----------------------------------------------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    path = tmp_path / "repo"
    path.mkdir()
    _git(path, "init", "-q", ".")
    return path


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=check, timeout=60
    )


def test_git_install_commits_clean_notebooks_and_diffs_them_as_text(kiln_cli, repo):
    res = kiln_cli("git", "install", cwd=repo)
    assert res.returncode == 0, res.stderr
    config = _git(repo, "config", "--local", "--list").stdout
    kiln_exe = str(Path(sys.executable).with_name("kiln"))
    assert f"filter.kiln-clean.clean={kiln_exe} clean --stdout --stdin-name %f -" in config
    assert f"diff.kiln.textconv={kiln_exe} diff --textconv" in config
    assert "*.ipynb filter=kiln-clean diff=kiln" in (repo / ".gitattributes").read_text()

    nb = repo / "report.ipynb"
    nbformat.write(_with_outputs(), nb)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "report")
    blob = _git(repo, "show", "HEAD:report.ipynb").stdout
    assert blob == clean_text(nb.read_bytes(), path="report.ipynb")[0]  # committed clean
    assert '"outputs": []' in blob and '"execution_count": null' in blob
    assert '"text": [' in nb.read_text()  # the working copy keeps its outputs

    # a re-run that changes only outputs and counts is not a change for git
    rerun = nbformat.read(nb, as_version=4)
    rerun.cells[1].outputs[0].text = "3 again\n"
    rerun.cells[1].execution_count = 7
    nbformat.write(rerun, nb)
    assert _git(repo, "diff", "--exit-code", check=False).returncode == 0
    _git(repo, "add", "-A")  # (like nbstripout, status may say M until git re-reads the file)
    assert _git(repo, "status", "--porcelain").stdout == ""

    rerun.cells[0].source = "n = 4"
    rerun.cells[1].outputs[0].text = "4\n"
    nbformat.write(rerun, nb)
    diff = _git(repo, "diff").stdout
    assert "-n = 3\n+n = 4\n" in diff and "# %% [code] tags: parameters" in diff
    assert '"source"' not in diff and "4\n" not in diff.split("+n = 4\n", 1)[1]


def test_git_install_is_idempotent_and_uninstalls(kiln_cli, repo):
    (repo / ".gitattributes").write_text("*.csv text\n")
    assert kiln_cli("git", "install", cwd=repo).returncode == 0
    assert kiln_cli("git", "install", cwd=repo).returncode == 0
    lines = (repo / ".gitattributes").read_text().splitlines()
    assert lines.count("*.ipynb filter=kiln-clean diff=kiln") == 1 and lines[0] == "*.csv text"
    res = kiln_cli("git", "install", "--uninstall", cwd=repo)
    assert res.returncode == 0 and "removed git config section filter.kiln-clean" in res.stdout
    assert (repo / ".gitattributes").read_text() == "*.csv text\n"
    assert "kiln" not in _git(repo, "config", "--local", "--list").stdout


def test_git_install_private_and_command_options(kiln_cli, repo):
    res = kiln_cli("git", "install", "--private", "--command", "kiln", cwd=repo)
    assert res.returncode == 0
    assert not (repo / ".gitattributes").exists()
    assert "filter=kiln-clean" in (repo / ".git" / "info" / "attributes").read_text()
    value = _git(repo, "config", "--local", "filter.kiln-clean.clean").stdout.strip()
    assert value == "kiln clean --stdout --stdin-name %f -"


def test_git_install_outside_a_repository_is_a_clear_error(kiln_cli, tmp_path):
    outside = tmp_path / "plain"
    outside.mkdir()
    res = kiln_cli("git", "install", cwd=outside, env={"GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert res.returncode == 2 and "not inside a git repository" in res.stderr


# -- pre-commit ---------------------------------------------------------------------------------


def test_pre_commit_hooks_expose_clean_and_lint():
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"kiln-clean", "kiln-clean-check", "kiln-lint"}
    assert hooks["kiln-clean-check"]["entry"].startswith("kiln clean --check")
    assert hooks["kiln-lint"]["entry"] == "kiln lint"
    assert all(h["types"] == ["jupyter"] and h["language"] == "python" for h in hooks.values())


# -- export, then run: the same records as the notebook -----------------------------------------

REPORT = [
    (
        'region: str = "EU"  # sales region\nn: int = 3\nitems: list = [1, 2]\nfast = False',
        ["parameters"],
    ),
    "import kiln\nimport pandas as pd\n%matplotlib inline\n"
    "def scaled(v):\n    return v * factor\nfactor = 1.5",
    "%time df = pd.DataFrame({'k': list(range(n)), 'v': [scaled(i) for i in range(n)]})\n"
    "kiln.record('total', float(df.v.sum()))\nkiln.record('table', df)",
    "label = f'{region}-{n}'\n!echo {label}\n"
    "kiln.record('label', label)\nkiln.record('items', items + [len(items)])\n"
    "kiln.record('fast', fast)",
]


@pytest.mark.kernel
def test_exported_script_records_what_the_notebook_run_records(make_nb, home, tmp_path):
    nb_path = make_nb(REPORT, name="report.ipynb")
    parameters = {"n": 4, "region": "US", "items": [7], "fast": True}
    run = kiln.run(nb_path, parameters=parameters, engine="kernel")  # a real Jupyter kernel

    script = tmp_path / "report.py"
    result = export_script(nbformat.read(nb_path, as_version=4), script_name="report.py")
    assert result.warnings == []
    script.write_text(result.text)
    records_file = tmp_path / "records.jsonl"
    done = subprocess.run(
        [sys.executable, str(script), "--n", "4", "--region", "US", "--items", "[7]", "--fast"],
        env=dict(os.environ, KILN_RECORDS_FILE=str(records_file)),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "US-4" in done.stdout
    recorded = {}
    for line in records_file.read_text().splitlines():
        entry = json.loads(line)
        recorded[entry["name"]] = entry["value"]
    assert recorded == run.record_values
    assert recorded["total"] == 9.0 and recorded["items"] == [7, 1]


# -- the peers' corpus: jupytext's notebooks export to scripts that compile ---------------------


def _jupytext_inputs() -> list[Any]:
    found = sorted(CORPUS.glob("jupytext/jupytext-*/tests/data/notebooks/inputs/ipynb_py/*.ipynb"))
    if not found:
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(path, id=path.stem.replace(" ", "_")) for path in found]


@pytest.mark.corpus
@pytest.mark.parametrize("notebook", _jupytext_inputs())
def test_jupytext_notebooks_export_to_scripts_that_compile(notebook, tmp_path):
    if notebook is None:
        corpus_path("jupytext")  # skips, saying where the corpus was looked for
        pytest.skip(f"no jupytext ipynb_py notebooks under {CORPUS}")
    nb = load_notebook(notebook)
    result = export_script(nb, source_name=notebook.name, script_name="script.py")
    script = tmp_path / "script.py"
    script.write_text(result.text, encoding="utf-8")
    py_compile.compile(str(script), doraise=True)
    # every cell of plain Python is in the script as code, at the body's indentation (a cell
    # that is one expression is shown, as Jupyter shows it)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.strip() and _plain_python(cell.source):
            first = cell.source.strip().splitlines()[0]
            assert f"\n    {first}" in result.text or f"\n    _kiln_show({first}" in result.text


def _plain_python(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True
