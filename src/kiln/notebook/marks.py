"""Marks Kiln leaves in an output notebook: the failure banner and the failing-cell marker.

A failed run's output notebook explains itself: a banner at the top says which cell failed
and why and links to a marker placed right before that cell.
"""

from __future__ import annotations

import html
from typing import Any

BANNER_TAG = "kiln-error-banner"
MARKER_TAG = "kiln-error-marker"
ANCHOR = "kiln-error-cell"


def remove_marks(nb: Any) -> None:
    """Drop banner and marker cells left by an earlier failed run of this notebook."""
    nb.cells = [
        c for c in nb.cells if not ({BANNER_TAG, MARKER_TAG} & set(c.metadata.get("tags", [])))
    ]


def add_failure_marks(
    nb: Any, cell_index: int | None, *, title: str, what: str, detail: str = ""
) -> None:
    """Insert the marker before ``cell_index`` (when known) and the banner at the top.

    ``title`` completes "This Kiln run ..." (``failed``, ``timed out``, ``crashed``);
    ``what`` says what the cell did (``raised ZeroDivisionError: division by zero``).
    """
    from nbformat.v4 import new_markdown_cell

    where = ""
    if cell_index is not None and 0 <= cell_index < len(nb.cells):
        cell = nb.cells[cell_index]
        count = cell.get("execution_count")
        label = f"In [{count}]" if count else f"cell {cell_index}"
        marker = new_markdown_cell(
            f'<span id="{ANCHOR}" style="color:#b00020">'
            f"<b>Kiln stopped here:</b> the next cell ({html.escape(label)}) "
            f"{html.escape(what)}</span>",
            metadata={"tags": [MARKER_TAG]},
        )
        nb.cells.insert(cell_index, marker)
        where = f' at <a href="#{ANCHOR}">{html.escape(label)}</a>'
    text = (
        f'<span style="color:#b00020"><b>This Kiln run {html.escape(title)}</b>{where}: '
        f"{html.escape(what)}</span>"
    )
    if detail:
        text += f"\n\n<pre>{html.escape(detail)}</pre>"
    nb.cells.insert(0, new_markdown_cell(text, metadata={"tags": [BANNER_TAG]}))
