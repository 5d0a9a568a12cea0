"""The fork engine imports what a kernel would: the notebook's own modules from the run's
working directory, once per run; only libraries are imported ahead in the warm parent."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from kiln.runner import Runner, RunRequest

from kilntest import build_notebook

pytestmark = pytest.mark.kernel

ENGINES = ["kernel", "fork"]


def _write_nb(path: Path, cells: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(build_notebook(cells), path)
    return path


def _library_to_shadow() -> str:
    """A small site-packages module that neither a kernel nor the warm parent imports on
    their own (so that a file of the same name in the working directory wins in a kernel)."""
    probe = (
        "import sys, json; from kiln.engines.forkshell import make_shell; make_shell(); "
        "import ipykernel.kernelapp; print(json.dumps(sorted(sys.modules)))"
    )
    loaded = set(json.loads(subprocess.check_output([sys.executable, "-c", probe])))
    for name in ("idna", "certifi", "mpmath", "six", "attr", "pyparsing"):
        spec = importlib.util.find_spec(name)
        if name not in loaded and spec is not None and "site-packages" in str(spec.origin):
            return name
    pytest.skip("no small site-packages module to shadow in this environment")


@pytest.fixture(scope="module")
def library() -> str:
    return _library_to_shadow()


def test_imports_resolve_from_the_notebooks_folder_not_kilns(tmp_path, kiln_cli, library):
    # A/nb.ipynb run from B/: a kernel runs in A, so it imports A/helpers.py, and A's file
    # shadows a site-packages library; B's files are nothing to it
    a, b = tmp_path / "A", tmp_path / "B"
    b.mkdir()
    nb = _write_nb(
        a / "nb.ipynb",
        [
            f"import helpers\nimport {library}\nimport kiln",
            "kiln.record('helpers', helpers.VALUE)\n"
            f"kiln.record('library', getattr({library}, 'SHADOW', 'site-packages'))",
        ],
    )
    (a / "helpers.py").write_text("VALUE = 'A'\n")
    (b / "helpers.py").write_text("VALUE = 'B'\n")
    (a / f"{library}.py").write_text("SHADOW = 'A'\n")
    (b / f"{library}.py").write_text("SHADOW = 'B'\n")
    seen = {}
    for engine in ENGINES:
        res = kiln_cli("run", str(nb), "--engine", engine, "--json", cwd=b)
        assert res.returncode == 0, res.stderr
        run = json.loads(res.stdout)
        seen[engine] = run["records"]
    assert seen["kernel"] == {"helpers": "A", "library": "A"}
    assert seen["fork"] == seen["kernel"]


def test_a_project_modules_side_effects_happen_once_per_run(tmp_path, kiln_cli):
    # helpers.py counts its imports: a kernel imports it once per run, so must the fork engine
    folder = tmp_path / "A"
    nb = _write_nb(folder / "nb.ipynb", [("i = 0", ["parameters"]), "import helpers"])
    (folder / "helpers.py").write_text(
        "import os\nwith open(os.path.join(os.path.dirname(__file__), 'imports.log'), 'a') as f:\n"
        "    f.write(f'{os.getpid()}\\n')\n"
    )
    (folder / "grid.yaml").write_text("i: [1, 2, 3, 4]\n")
    for engine in ENGINES:
        log = folder / "imports.log"
        log.unlink(missing_ok=True)
        res = kiln_cli(
            "run", str(nb), "--sweep", "grid.yaml", "-j", "2", "--engine", engine, cwd=folder
        )
        assert res.returncode == 0, res.stderr
        pids = log.read_text().split()
        assert len(pids) == 4 and len(set(pids)) == 4, f"{engine}: {pids}"


def test_a_library_imported_ahead_is_still_shadowed_by_a_later_runs_file(tmp_path, library):
    # one warm parent for both runs: the first pre-imports the library from site-packages,
    # the second runs where a file of that name shadows it, as it would in a kernel
    cells = [
        f"import {library}\nimport kiln\nkiln.record('from', getattr({library}, 'SHADOW', 'lib'))"
    ]
    plain = _write_nb(tmp_path / "P" / "nb.ipynb", cells)
    local = _write_nb(tmp_path / "Q" / "nb.ipynb", cells)
    (tmp_path / "Q" / f"{library}.py").write_text("SHADOW = 'Q'\n")

    async def main() -> list:
        runner = Runner(home=tmp_path / "home")
        try:
            return [
                await runner.arun(RunRequest(notebook=nb, engine="fork"), check=False)
                for nb in (plain, local)
            ]
        finally:
            await runner.aclose_engines()
            runner.close()

    first, second = asyncio.run(main())
    assert first.records == {"from": "lib"}
    assert second.records == {"from": "Q"}
    with Runner(home=tmp_path / "home") as runner:
        kernel = runner.run(RunRequest(notebook=local, engine="kernel"), check=False)
    assert kernel.records == second.records
