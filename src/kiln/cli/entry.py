"""The ``kiln`` command's entry point: loads the CLI, so that a Ctrl-C while Kiln is still
loading ends like one at any later moment ("Interrupted.", exit 130), not with a traceback
of whichever import it landed in (``main`` catches it from the moment it runs)."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from kiln.cli.main import main as run
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    return run()
