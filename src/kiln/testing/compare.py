"""Compare a notebook's saved outputs with a fresh execution's, cell by cell, and find the
first cell where they diverge.

A code cell is compared when its outputs mean something on both sides:

- cells tagged or commented to be skipped or ignored (:mod:`kiln.testing.markers`) are not;
- a cell never executed in the saved notebook (no execution count, no outputs) is not: there
  is nothing to reproduce (nbval's rule too);
- the comparison stops at a cell the fresh run did not reach (it failed before).

Execution counts and output metadata are never compared: a fresh run numbers cells 1..n
whatever order they were saved in. Out-of-order counts in the saved notebook are reported as a
warning, since they are how hidden state usually gets in.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kiln.testing.markers import cell_policy, is_injected
from kiln.testing.normalize import Normalizer, render_outputs

_MARK_TAGS = frozenset({"kiln-error-banner", "kiln-error-marker"})
#: lines of unified diff kept in a report
DIFF_LINES = 40


@dataclass(frozen=True)
class CellDivergence:
    """The first code cell whose normalised outputs differ."""

    cell_index: int
    execution_count: int | None
    source: str
    saved: list[dict[str, Any]]
    fresh: list[dict[str, Any]]
    diff: str

    def to_json(self) -> dict[str, Any]:
        return {
            "cell_index": self.cell_index,
            "execution_count": self.execution_count,
            "source": self.source,
            "diff": self.diff,
            "saved": self.saved,
            "fresh": self.fresh,
        }


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare_notebooks` found. ``ok`` when no compared cell diverged."""

    compared: int
    divergence: CellDivergence | None
    #: (cell index, why it was not compared)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: index in the fresh notebook of the last cell compared (None when none was)
    last_compared: int | None = None

    @property
    def ok(self) -> bool:
        return self.divergence is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "compared": self.compared,
            "divergence": self.divergence.to_json() if self.divergence else None,
            "skipped": [{"cell_index": i, "reason": why} for i, why in self.skipped],
            "warnings": list(self.warnings),
        }


NotebookLike = Mapping[str, Any] | str | os.PathLike[str]


def compare_notebooks(
    saved: NotebookLike,
    fresh: NotebookLike,
    *,
    normalizer: Normalizer | None = None,
    reached: int | None = None,
) -> Comparison:
    """Compare the outputs of ``saved`` (the notebook as committed) with ``fresh`` (the output
    notebook of a new run); both are notebooks or paths to them.

    ``reached`` is the index, in ``fresh``, of the last cell the fresh run executed (the cell
    that failed); cells after it are not compared. Kiln's failure banner and marker cells,
    and an ``injected-parameters`` cell only the fresh run has, are left out before cells are
    paired in order.

    >>> comparison = compare_notebooks("report.ipynb", run.output_path)
    >>> comparison.ok, comparison.divergence
    """
    normalizer = normalizer or Normalizer()
    saved_cells = list(_cells(saved))
    fresh_cells = list(_cells(fresh))
    pairs = _pair(saved_cells, fresh_cells)
    compared = 0
    last: int | None = None
    skipped: list[tuple[int, str]] = []
    warnings = _order_warnings(saved_cells)
    for (s_index, s_cell), (f_index, f_cell) in pairs:
        if s_cell.get("cell_type") != "code":
            continue
        if reached is not None and f_index > reached:
            skipped.append((s_index, "not reached: the fresh run stopped before it"))
            continue
        why = _not_compared(s_cell)
        if why:
            skipped.append((s_index, why))
            continue
        compared += 1
        last = f_index
        mine = normalizer.outputs(list(s_cell.get("outputs", [])))
        theirs = normalizer.outputs(list(f_cell.get("outputs", [])))
        if mine != theirs:
            divergence = CellDivergence(
                cell_index=s_index,
                execution_count=s_cell.get("execution_count"),
                source=_source(s_cell),
                saved=mine,
                fresh=theirs,
                diff=unified_diff(mine, theirs),
            )
            return Comparison(compared, divergence, skipped, warnings, last)
    if not compared:
        warnings.append(
            "no saved outputs to compare (was the notebook cleaned?): only checked that it runs"
        )
    return Comparison(compared, None, skipped, warnings, last)


def unified_diff(saved: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]) -> str:
    """A short unified diff of two normalised output lists (saved -> fresh)."""
    lines = list(
        difflib.unified_diff(
            render_outputs(saved), render_outputs(fresh), "saved", "fresh", n=2, lineterm=""
        )
    )
    if len(lines) > DIFF_LINES:
        lines = [*lines[:DIFF_LINES], f"... ({len(lines) - DIFF_LINES} more diff lines)"]
    return "\n".join(lines)


def _not_compared(cell: Mapping[str, Any]) -> str:
    policy = cell_policy(cell)
    if not policy.compared:
        return f"not compared ({policy.why})"
    if is_injected(cell):
        return "injected parameters"
    if cell.get("execution_count") is None and not cell.get("outputs"):
        return "never executed in the saved notebook"
    return ""


def _cells(nb: NotebookLike) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(index, cell) without Kiln's failure marks; indices are those of the notebook as the
    run saw it (marks are added after a run, so removing them restores those indices)."""
    if isinstance(nb, (str, os.PathLike)):
        from kiln.notebook import load_notebook

        cells = load_notebook(nb).cells
    else:
        cells = nb["cells"]
    index = 0
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if _MARK_TAGS.intersection(tags if isinstance(tags, list) else []):
            continue
        yield index, cell
        index += 1


Indexed = tuple[int, Mapping[str, Any]]


def _pair(saved: list[Indexed], fresh: list[Indexed]) -> list[tuple[Indexed, Indexed]]:
    """Pair cells in order, passing over an injected-parameters cell only ``fresh`` has."""
    pairs = []
    j = 0
    for item in saved:
        while j < len(fresh) and is_injected(fresh[j][1]) and not is_injected(item[1]):
            j += 1
        if j >= len(fresh):
            break
        pairs.append((item, fresh[j]))
        j += 1
    return pairs


def _order_warnings(cells: list[Indexed]) -> list[str]:
    last: tuple[int, int] | None = None
    for index, cell in cells:
        count = cell.get("execution_count") if cell.get("cell_type") == "code" else None
        if not isinstance(count, int):
            continue
        if last is not None and count <= last[1]:
            return [
                f"the saved notebook was not run top to bottom: cell {index} has In [{count}] "
                f"after cell {last[0]}'s In [{last[1]}], so its outputs may rest on hidden state"
            ]
        last = (index, count)
    return []


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)
