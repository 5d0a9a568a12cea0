"""The declared public surface, and `import kiln` staying light (it runs inside kernels)."""

from __future__ import annotations

import subprocess
import sys

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
