"""kiln.testing's declared surface, and the pytest plugin staying light when unused."""

from __future__ import annotations

import subprocess
import sys


def test_plugin_import_is_light() -> None:
    # pytest imports the plugin at every start-up wherever Kiln is installed
    code = (
        "import sys, kiln.testing.plugin\n"
        "heavy = [m for m in ('kiln.runner', 'kiln.store', 'nbformat', 'sqlalchemy', 'yaml',"
        " 'jupyter_client', 'kiln.lint') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
