"""kiln.processes: the prctl switches (what can be checked without a fork server)."""

from __future__ import annotations

import subprocess
import sys


def test_set_name_renames_the_process_and_keeps_fifteen_bytes():
    # in a process of its own: renaming the test worker would rename it for the whole session
    code = (
        "from kiln import processes\n"
        "ok = processes.set_name('kiln-run-with-a-long-name')\n"
        "print(ok, open('/proc/self/comm').read().strip())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True kiln-run-with-a"
