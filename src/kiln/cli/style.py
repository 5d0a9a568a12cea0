"""Colour on the terminal: one rule for every command (``--color``, ``NO_COLOR``, a TTY)."""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import TextIO


def use_color(choice: str, stream: TextIO) -> bool:
    """``always``/``never`` decide; ``auto`` colours a terminal unless ``NO_COLOR`` is set
    (``--color`` sets ``NO_COLOR``/``FORCE_COLOR`` for the whole process, rich included)."""
    if choice == "always" or (choice == "auto" and os.environ.get("FORCE_COLOR")):
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return stream.isatty()


#: ANSI colours by name (the few the tables use)
_ANSI = {"green": "32", "red": "31", "yellow": "33", "dim": "2", "bold": "1", "cyan": "36"}


def table_text(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    colours: Sequence[str | None] = (),
    coloured_column: int = 1,
    right: Collection[int] = (),
    color: bool = False,
) -> str:
    """Aligned columns as plain text (fast for thousands of rows, unlike a rich Table): a
    bold header when ``color``, and ``colours[i]`` on row ``i``'s ``coloured_column``."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str], colour: str | None, header: bool = False) -> str:
        parts = []
        for i, cell in enumerate(cells):
            text = cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            style = "bold" if header else (colour if i == coloured_column else None)
            if color and style in _ANSI:
                text = f"\x1b[{_ANSI[style]}m{text}\x1b[0m"
            parts.append(text)
        return "  ".join(parts).rstrip()

    out = [line(headers, None, header=True)]
    out += [line(row, colours[i] if i < len(colours) else None) for i, row in enumerate(rows)]
    return "\n".join(out) + "\n"
