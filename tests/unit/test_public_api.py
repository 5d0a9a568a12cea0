"""The declared public surface, and `import kiln` staying light (it runs inside kernels)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kiln
import kiln.errors


def test_errors_tree():
    from kiln.errors import KilnError

    for name in kiln.errors.__all__:
        cls = getattr(kiln.errors, name)
        if name != "CellFailure":  # the value a CellExecutionError carries, not an error
            assert issubclass(cls, KilnError)
    assert kiln.errors.ParameterError.exit_code == 2
    assert kiln.errors.NotebookError.exit_code == 2
    assert kiln.errors.CellExecutionError.exit_code == 1


def test_import_kiln_is_light():
    code = (
        "import sys, kiln\n"
        "heavy = [m for m in ('nbformat', 'sqlalchemy', 'jupyter_client', 'nbclient', 'yaml',"
        " 'pandas', 'rich', 'asyncio') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


SERVER_PACKAGES = ("fastapi", "starlette", "uvicorn", "argon2", "prometheus_client", "nbconvert")


def _loaded_by_a_run(tmp_path: Path, modules: tuple[str, ...], **env: str) -> list[str]:
    """Which of ``modules`` a ``kiln run --prepare-only`` of a one-cell notebook (outside any
    project) loads, in a fresh interpreter."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = tmp_path / "nb.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1")]), nb)
    code = (
        "import sys\n"
        "from kiln.cli.main import run_main\n"
        f"code = run_main(['run', {str(nb)!r}, '--prepare-only', '-q'])\n"
        "assert code == 0, code\n"
        f"print(' '.join(m for m in {modules!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "KILN_HOME": str(tmp_path / "home"), **env},
        cwd=tmp_path,
    )
    return out.stdout.split()


def test_the_cli_and_kiln_run_load_nothing_of_the_server(tmp_path):
    # the server's packages are an extra: `kiln run` (and every command's parser, which
    # includes kiln serve's) must work, and stay fast, without them
    assert _loaded_by_a_run(tmp_path, SERVER_PACKAGES) == []


def test_a_run_outside_any_project_reads_no_project_file_code(tmp_path):
    # no kiln.yaml above the notebook: the environment's KILN_* settings are the defaults, and
    # the project file's parser and sections (~15 ms to import) stay unloaded
    modules = ("kiln.project.file", "kiln.project.sections", "yaml")
    assert _loaded_by_a_run(tmp_path, modules, KILN_TIMEOUT="5m") == []
