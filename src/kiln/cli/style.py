"""Colour on the terminal: one rule for every command (``--color``, ``NO_COLOR``, a TTY)."""

from __future__ import annotations

import os
from typing import TextIO


def use_color(choice: str, stream: TextIO) -> bool:
    """``always``/``never`` decide; ``auto`` colours a terminal unless ``NO_COLOR`` is set
    (``--color`` sets ``NO_COLOR``/``FORCE_COLOR`` for the whole process, rich included)."""
    if choice == "always" or (choice == "auto" and os.environ.get("FORCE_COLOR")):
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()
